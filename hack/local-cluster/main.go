// Command local-cluster runs a real single-node Kubernetes cluster on this machine, built from Go
// modules and Debian packages (no Docker engine, no registry, no downloads):
//
//	go run ./hack/local-cluster up            # start (or reuse) the cluster
//	go run ./hack/local-cluster status        # what runs
//	go run ./hack/local-cluster load X.tar... # import image tarballs into its containerd
//	go run ./hack/local-cluster kubeconfig    # print the admin kubeconfig path
//	go run ./hack/local-cluster down          # stop everything it started, restore the host, remove its state
//
// It must run as root. See internal/localcluster for what each step does.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshlift/meshlift/internal/localcluster"
	"github.com/meshlift/meshlift/internal/repo"
)

// DefaultStateDir holds everything of the cluster; `down` removes it.
const DefaultStateDir = "/var/lib/meshlift-local-cluster"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "local-cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := repo.Root()
	if err != nil {
		return err
	}
	flags := flag.NewFlagSet("local-cluster", flag.ExitOnError)
	stateDir := flags.String("state-dir", DefaultStateDir, "Directory for the cluster's state: PKI, configs, logs, etcd, containerd, kubelet.")
	binDir := flags.String("bin-dir", repo.KubeBinDir(root), "Directory of the Kubernetes binaries (built there from hack/kube when missing).")
	nodeIP := flags.String("node-ip", "", "Node and API server address (default: the address of the default route's interface).")
	flags.Usage = func() {
		fmt.Fprintf(flags.Output(), "Usage: local-cluster [flags] up|down|status|load IMAGE.tar...|kubeconfig\n\nFlags:\n")
		flags.PrintDefaults()
	}
	_ = flags.Parse(os.Args[1:])
	if flags.NArg() == 0 {
		flags.Usage()
		os.Exit(2)
	}

	ip := net.ParseIP(*nodeIP)
	if *nodeIP == "" {
		if ip, err = localcluster.DefaultRouteIP(); err != nil {
			return err
		}
	} else if ip == nil || ip.To4() == nil {
		return fmt.Errorf("--node-ip %q is not an IPv4 address", *nodeIP)
	}
	cluster := &localcluster.Cluster{
		Layout:   localcluster.Layout{StateDir: *stateDir, BinDir: *binDir},
		Config:   localcluster.DefaultConfig(ip.To4()),
		RepoRoot: root,
		Out:      os.Stdout,
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	switch cmd, args := flags.Arg(0), flags.Args()[1:]; cmd {
	case "up":
		return cluster.Up(ctx)
	case "down":
		return cluster.Down(ctx)
	case "status":
		return cluster.Status(ctx)
	case "load":
		if len(args) == 0 {
			return fmt.Errorf("load needs one or more image tarballs")
		}
		return cluster.Load(ctx, args)
	case "kubeconfig":
		fmt.Println(cluster.Layout.AdminKubeconfig())
		return nil
	default:
		flags.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}
