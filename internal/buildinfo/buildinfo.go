// Package buildinfo carries the version the binaries were built as.
package buildinfo

// Version is set at build time with -ldflags "-X github.com/meshlift/meshlift/internal/buildinfo.Version=...".
var Version = "dev"
