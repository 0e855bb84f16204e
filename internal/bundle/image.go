package bundle

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/meshlift/meshlift/internal/images"
)

// bundleFileMode is the mode of the bundle's files in its image: they are read, never run.
const bundleFileMode int64 = 0o644

// ImageSpec describes the bundle image of the bundle under root, as bundle.Dockerfile builds
// it: FROM scratch, one layer with the files of ImageDirs, the labels of
// bundle/metadata/annotations.yaml, nothing to run. ref is the image's reference, e.g.
// DefaultBundleImage("0.1.0").
func ImageSpec(root, ref string) (images.Spec, error) {
	var meta struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := readYAML(filepath.Join(root, Dir, "metadata", "annotations.yaml"), &meta); err != nil {
		return images.Spec{}, fmt.Errorf("failed to read the bundle's annotations (run make bundle): %w", err)
	}
	if len(meta.Annotations) == 0 {
		return images.Spec{}, fmt.Errorf("%s/metadata/annotations.yaml has no annotations", Dir)
	}
	spec := images.Spec{Ref: ref, Labels: meta.Annotations, FilesOnly: true}
	for _, dir := range ImageDirs {
		names, err := listFiles(root, dir.Source)
		if err != nil {
			return images.Spec{}, err
		}
		if len(names) == 0 {
			return images.Spec{}, fmt.Errorf("%s has no files (run make bundle)", dir.Source)
		}
		for _, name := range names {
			rel := strings.TrimPrefix(name, dir.Source+"/")
			spec.Files = append(spec.Files, images.File{
				Source: filepath.Join(root, filepath.FromSlash(name)),
				Dest:   path.Join(dir.Dest, rel),
				Mode:   bundleFileMode,
			})
		}
	}
	return spec, nil
}
