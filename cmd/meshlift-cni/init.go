package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// ownNetNS is the network namespace of this process (in the capture init container, the pod's),
// entered without setns: the init container has NET_ADMIN only.
const ownNetNS = capture.CurrentNetNS

// defaultAnnotationsFile is where the injector mounts the pod's downward-API annotations
// (sidecar.AnnotationFile).
const defaultAnnotationsFile = "/etc/meshlift/podinfo/annotations"

// runInit is "meshlift-cni init": the capture init container of --capture-mode=init-container.
// It sets the rules the pod's annotations ask for in its own network namespace and exits; a
// non-zero exit keeps the pod from starting (fail closed, as the plugin's ADD).
func runInit(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlift-cni init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	annotationsFile := fs.String("annotations", defaultAnnotationsFile, "The pod's downward-API annotations file (key=\"value\" lines).")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "meshlift-cni init: unexpected arguments %q; it takes only --annotations\n", fs.Args())
		return 2
	}
	result, err := initCapture(*annotationsFile, ownNetNS)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "meshlift-cni init: %v\n", err)
		return 1
	}
	_, _ = fmt.Fprintf(stderr, "meshlift-cni init: %s\n", result)
	return 0
}

// initCapture reads the pod's annotations from annotationsFile and installs the rules they ask
// for in the network namespace at netnsPath, then checks them. It returns what it did, in words.
func initCapture(annotationsFile, netnsPath string) (string, error) {
	data, err := os.ReadFile(annotationsFile)
	if err != nil {
		return "", fmt.Errorf("failed to read the pod's annotations (mount the downward-API volume with metadata.annotations there, or pass --annotations): %w", err)
	}
	annotations, err := proxyconfig.ParseAnnotations(data)
	if err != nil {
		return "", fmt.Errorf("failed to parse the pod's annotations file %s: %w", annotationsFile, err)
	}
	if !capture.Marked(annotations) {
		return fmt.Sprintf("the pod is not marked for capture (%s is %q); no rules installed", capture.AnnotationCapture, annotations[capture.AnnotationCapture]), nil
	}
	config, err := capture.ParseAnnotations(annotations)
	if err != nil {
		return "", fmt.Errorf("the pod's capture annotations are malformed; fix them in the pod template: %w", err)
	}
	ruleset, err := capture.NewRuleset(config)
	if err != nil {
		return "", fmt.Errorf("failed to build the capture rules: %w", err)
	}
	if err := capture.Apply(netnsPath, ruleset); err != nil {
		return "", fmt.Errorf("failed to install the capture rules in this network namespace: %w", err)
	}
	if err := capture.Check(netnsPath, ruleset); err != nil {
		return "", fmt.Errorf("the capture rules were installed but do not read back as expected: %w", err)
	}
	return fmt.Sprintf("installed table %s %s (%s=%q)", capture.TableFamily, capture.TableName,
		capture.AnnotationCapture, annotations[capture.AnnotationCapture]), nil
}
