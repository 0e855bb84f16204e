#!/usr/bin/env bash
# Builds Kubernetes v1.36.3 components (and etcd) from Go modules into OUTDIR, stamped with their
# real version (the module build alone reports v0.0.0-master). Used by the Makefile and by
# hack/local-cluster, so both build them the same way.
#
#   hack/kube/build.sh OUTDIR kube-apiserver etcd kubelet ...
set -euo pipefail
out=$(realpath -m "$1"); shift
cd "$(dirname "$0")"
version=v1.36.3
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=36 -X $pkg.gitTreeState=clean"
done
mkdir -p "$out"
targets=()
for bin in "$@"; do targets+=("./$bin"); done
go build -ldflags "$ldflags" -o "$out/" "${targets[@]}"
