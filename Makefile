# Meshlift — see README.md. `make help` lists the targets.
#
# Everything the targets need is built into bin/ (gitignored) from Go modules on first use and
# reused afterwards; nothing is downloaded outside the Go module proxy.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

LOCALBIN ?= $(CURDIR)/bin
KUBE_VERSION ?= 1.36.3
CONTROLLER_TOOLS_VERSION ?= v0.23.0

# kube-apiserver and etcd for envtest, built from Go modules by hack/kube.
ENVTEST_ASSETS ?= $(LOCALBIN)/k8s/$(KUBE_VERSION)
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)

GO_TEST_FLAGS ?= -count=1 -timeout 30m
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/meshlift/meshlift/internal/buildinfo.Version=$(VERSION)

say = @printf '\033[1m==> %s\033[0m\n' "$(1)"

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the Go markers.
	$(call say,Generating CRDs (config/crd/bases) and RBAC (config/rbac/role.yaml))
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./... output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy functions.
	$(call say,Generating deepcopy functions (api/v1alpha1/zz_generated.deepcopy.go))
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

# The generated files that verify-generated compares.
GENERATED := config/crd/bases config/rbac/role.yaml api/v1alpha1/zz_generated.deepcopy.go

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail if generated files are stale (they are regenerated either way).
	$(call say,Checking that generated files are up to date)
	@snapshot=$$(mktemp -d); trap 'rm -rf "$$snapshot"' EXIT; \
	for f in $(GENERATED); do mkdir -p "$$snapshot/$$(dirname $$f)"; if [ -e "$$f" ]; then cp -r "$$f" "$$snapshot/$$f"; fi; done; \
	$(MAKE) --no-print-directory manifests generate >/dev/null; \
	stale=0; for f in $(GENERATED); do diff -ru "$$snapshot/$$f" "$$f" || stale=1; done; \
	if [ $$stale = 1 ]; then echo "Generated files were stale and have been regenerated (diff above): review and commit them." >&2; exit 1; fi

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet and check formatting.
	$(call say,Running go vet and gofmt)
	go vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted (run make fmt)" >&2; exit 1; fi

.PHONY: test
test: verify-generated vet envtest-assets ## Run the whole test suite (unit + envtest).
	$(call say,Running unit and envtest tests (kube-apiserver $(KUBE_VERSION) from $(ENVTEST_ASSETS)))
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: ## Run the benchmarks and print their numbers (also written to bench-results.txt).
	$(call say,Running benchmarks)
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test -run '^$$' -bench . -benchmem ./... | tee bench-results.txt

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 10s).
	@for pkg in $$(go list ./...); do \
	  for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzzing $$pkg $$target"; go test -run '^$$' -fuzz "^$$target$$" -fuzztime $${FUZZTIME:-10s} $$pkg; \
	  done; \
	done

##@ Build and run

.PHONY: build
build: generate ## Build the operator binary into bin/meshlift.
	$(call say,Building bin/meshlift)
	go build -ldflags '$(LDFLAGS)' -o $(LOCALBIN)/meshlift .

.PHONY: install
install: manifests ## Install the CRDs into the cluster of the current kubeconfig.
	$(call say,Installing CRDs into the current cluster)
	kubectl apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: ## Remove the CRDs (and every Meshlift object) from the current cluster.
	kubectl delete --ignore-not-found -f config/crd/bases

.PHONY: run
run: install ## Run the operator on this machine against the current kubeconfig.
	$(call say,Running the operator against $$(kubectl config current-context))
	go run -ldflags '$(LDFLAGS)' . --log-format=console --metrics-bind-address=0 --health-probe-bind-address=:8081

##@ Tools (built into bin/ from Go modules, cached)

.PHONY: envtest-assets
envtest-assets: $(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd ## Build kube-apiserver and etcd for envtest.

$(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd &: hack/kube/go.mod hack/kube/go.sum
	$(call say,Building kube-apiserver v$(KUBE_VERSION) and etcd from Go modules into $(ENVTEST_ASSETS) (cold: about 7 minutes on 2 cores; cached afterwards))
	@mkdir -p $(ENVTEST_ASSETS)
	cd hack/kube && go build -o $(ENVTEST_ASSETS)/ ./kube-apiserver ./etcd
	@touch $(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd

$(CONTROLLER_GEN):
	$(call say,Building controller-gen $(CONTROLLER_TOOLS_VERSION) into bin/)
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)
