# syntax=docker/dockerfile:1
# One Meshlift binary in a distroless image. CMD selects the main package:
#   docker build -t meshlift/meshlift-operator:dev .
#   docker build --build-arg CMD=./cmd/meshlift-idle -t meshlift/meshlift-idle:dev .
#   docker build --build-arg CMD=./cmd/meshlift-demo -t meshlift/meshlift-demo:dev .
# VERSION is compiled into the binary (internal/buildinfo). Needs BuildKit (the default since
# Docker 23). Without Docker, `go run ./hack/images` builds the same images as tarballs for
# `ctr images import`.

FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
ARG CMD=.
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X github.com/meshlift/meshlift/internal/buildinfo.Version=${VERSION}" \
      -o /out/app "${CMD}"

# Static binaries need no libc; the nonroot variant runs as 65532:65532, as the hack/images
# images do. meshlift-demo serves when it gets no arguments, so no CMD is needed here.
FROM gcr.io/distroless/static:nonroot
COPY --from=builder /out/app /app
USER 65532:65532
ENTRYPOINT ["/app"]
