package localcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/meshlift/meshlift/internal/images"
)

// loadPauseImage builds the sandbox image from hack/local-cluster/pause and imports it.
func (c *Cluster) loadPauseImage() error {
	dir := c.Layout.path("images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	binary := filepath.Join(dir, "pause")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", binary, "./hack/local-cluster/pause")
	build.Dir = c.RepoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("failed to build the pause binary: %w: %s", err, out)
	}
	img, err := images.Build(images.Spec{
		Ref:        c.Config.SandboxImage,
		Files:      []images.File{{Source: binary, Dest: "/pause"}},
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
	})
	if err != nil {
		return err
	}
	tarball := filepath.Join(dir, "pause.tar")
	if err := images.WriteTarball(tarball, c.Config.SandboxImage, img); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.importImage(ctx, tarball)
}
