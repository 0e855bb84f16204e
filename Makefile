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

KUSTOMIZE_VERSION ?= v5.8.0

# Kubernetes binaries (kube-apiserver and etcd for envtest; the rest for the local cluster; kubectl),
# built from Go modules by hack/kube/build.sh.
KUBE_BIN ?= $(LOCALBIN)/k8s/$(KUBE_VERSION)
ENVTEST_ASSETS ?= $(KUBE_BIN)
KUBECTL ?= $(KUBE_BIN)/kubectl
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)

# The local cluster (hack/local-cluster) and the images loaded into it.
LOCAL_CLUSTER ?= $(LOCALBIN)/local-cluster
CLUSTER_STATE ?= /var/lib/meshlift-local-cluster
CLUSTER_KUBECONFIG ?= $(CLUSTER_STATE)/admin.kubeconfig
IMAGE_TAG ?= dev
IMAGES_DIR ?= $(LOCALBIN)/images
# The proxy versions the demo's SidecarVersions name (config/demo): meshlift/meshlift-proxy:<v>.
DEMO_PROXY_VERSIONS ?= 1.0.0 2.0.0
K = $(KUBECTL) --kubeconfig $(CLUSTER_KUBECONFIG)

GO_TEST_FLAGS ?= -count=1 -timeout 30m
# The end-to-end suite runs its tests one after another on one node (the capture tests change the
# operator's flags and the node's CNI chain, which every pod created meanwhile would see): about
# 32 minutes on 2 cores, so its own timeout.
E2E_TEST_FLAGS ?= -count=1 -timeout 50m
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/meshlift/meshlift/internal/buildinfo.Version=$(VERSION)

say = @printf '\033[1m==> %s\033[0m\n' "$(1)"

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

# RBAC (docs/security.md#permissions): the +kubebuilder:rbac markers of the packages only one mode
# runs go into a role of their own that only that mode's install binds; every other package's
# go into manager-role (config/rbac/role.yaml).
RBAC_MODE_PACKAGES := ./internal/webhookcert ./internal/identity/certmanager
RBAC_COMMON_PATHS = $(shell grep -rl --include='*.go' --exclude='*_test.go' '^// +kubebuilder:rbac:' main.go api cmd controllers internal webhooks | \
	xargs -n1 dirname | sed 's|^\([^.]\)|./\1|' | sort -u | grep -v $(foreach p,$(RBAC_MODE_PACKAGES),-e '^$(p)$$') | paste -sd';')

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the Go markers.
	$(call say,Generating CRDs (config/crd/bases) and RBAC (config/rbac/role.yaml, config/rbac/webhook-certificates, config/rbac/ca-cert-manager))
	$(CONTROLLER_GEN) crd paths=./... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths="$(RBAC_COMMON_PATHS)" output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=webhook-certificates paths=./internal/webhookcert output:rbac:artifacts:config=config/rbac/webhook-certificates
	$(CONTROLLER_GEN) rbac:roleName=ca-cert-manager paths=./internal/identity/certmanager output:rbac:artifacts:config=config/rbac/ca-cert-manager

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy functions.
	$(call say,Generating deepcopy functions (api/v1alpha1/zz_generated.deepcopy.go))
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

# The generated files that verify-generated compares.
GENERATED := config/crd/bases config/rbac/role.yaml config/rbac/webhook-certificates/role.yaml config/rbac/ca-cert-manager/role.yaml api/v1alpha1/zz_generated.deepcopy.go

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail if generated files are stale (they are regenerated either way).
	$(call say,Checking that generated files are up to date)
	@snapshot=$$(mktemp -d); trap 'rm -rf "$$snapshot"' EXIT; \
	for f in $(GENERATED); do mkdir -p "$$snapshot/$$(dirname $$f)"; if [ -e "$$f" ]; then cp -r "$$f" "$$snapshot/$$f"; fi; done; \
	$(MAKE) --no-print-directory manifests generate >/dev/null; \
	stale=0; for f in $(GENERATED); do diff -ru "$$snapshot/$$f" "$$f" || stale=1; done; \
	if [ $$stale = 1 ]; then echo "Generated files were stale and have been regenerated (diff above): review and commit them." >&2; exit 1; fi

# The OLM bundle (docs/olm.md). BUNDLE_VERSION is the CSV's semantic version (VERSION above is
# the binaries' git-describe version); set BUNDLE_CREATED_AT and BUNDLE_REPLACES with it when
# releasing, so regenerating never depends on the clock.
BUNDLE_VERSION ?= 0.1.0
BUNDLE_CREATED_AT ?= 2026-12-06T00:00:00Z
BUNDLE_REPLACES ?=
BUNDLE_SKIP_RANGE ?=
BUNDLE_OPERATOR_IMAGE ?= meshlift/meshlift-operator:$(BUNDLE_VERSION)
# The bundle image: the catalog (catalog/meshlift) names it, make bundle-build tags its tarball so.
BUNDLE_IMG ?= docker.io/meshlift/meshlift-operator-bundle:v$(BUNDLE_VERSION)
CHANNELS ?= stable
DEFAULT_CHANNEL ?= stable

.PHONY: bundle
bundle: ## Generate bundle/, bundle.Dockerfile (OLM registry+v1: CSV, CRDs, metadata, scorecard) and the catalog catalog/meshlift from config/default and config/samples.
	$(call say,Generating the OLM bundle meshlift.v$(BUNDLE_VERSION) (channels $(CHANNELS), default $(DEFAULT_CHANNEL)) and its catalog)
	go run ./hack/bundle --version '$(BUNDLE_VERSION)' --created-at '$(BUNDLE_CREATED_AT)' --replaces '$(BUNDLE_REPLACES)' \
	  --skip-range '$(BUNDLE_SKIP_RANGE)' --image '$(BUNDLE_OPERATOR_IMAGE)' --channels '$(CHANNELS)' --default-channel '$(DEFAULT_CHANNEL)' \
	  --bundle-image '$(BUNDLE_IMG)'

.PHONY: bundle-build
bundle-build: ## Build the bundle image from the committed bundle/ (no Docker) into bin/images/bundle/bundle.tar, tagged BUNDLE_IMG.
	$(call say,Building the bundle image $(BUNDLE_IMG) into $(IMAGES_DIR)/bundle/bundle.tar (apart from the images make load-images loads))
	go run ./hack/bundle image --out $(IMAGES_DIR)/bundle --image '$(BUNDLE_IMG)'

.PHONY: argocd-cm
argocd-cm: ## Regenerate config/argocd/argocd-cm.yaml from the Argo CD health checks.
	$(call say,Generating config/argocd/argocd-cm.yaml from config/argocd/resource_customizations)
	go test ./internal/argocd -run TestTheArgoCDConfigMapSnippetIsCurrent -update

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet and check formatting.
	$(call say,Running go vet and gofmt)
	go vet ./...
	go vet -tags e2e ./test/e2e/...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted (run make fmt)" >&2; exit 1; fi

.PHONY: test
test: test-unit test-e2e ## Run the whole test suite: unit, envtest and end-to-end (needs root).

.PHONY: test-unit
test-unit: verify-generated vet envtest-assets ## Run unit and envtest tests (no cluster needed).
	$(call say,Running unit and envtest tests (kube-apiserver $(KUBE_VERSION) from $(ENVTEST_ASSETS)))
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test $(GO_TEST_FLAGS) ./...

.PHONY: test-e2e
test-e2e: deploy ## Run the end-to-end suite against the local cluster (brings it up; takes it down at the end).
	$(call say,Running end-to-end tests against the local cluster)
	E2E_KUBECONFIG=$(CLUSTER_KUBECONFIG) E2E_LOCAL_CLUSTER=$(LOCAL_CLUSTER) E2E_CLUSTER_STATE=$(CLUSTER_STATE) \
	  E2E_KUSTOMIZE=$(KUSTOMIZE) E2E_KUBECTL=$(KUBECTL) \
	  go test -tags e2e $(E2E_TEST_FLAGS) -v ./test/e2e/...

.PHONY: bench
bench: bench-unit bench-e2e ## Run every benchmark and print its numbers (also written to bench-results.txt).

.PHONY: bench-unit
bench-unit: envtest-assets ## Run the benchmarks that need no cluster (envtest at most).
	$(call say,Running benchmarks)
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) go test -run '^$$' -bench . -benchmem ./... | tee bench-results.txt

.PHONY: bench-e2e
bench-e2e: deploy ## Measure the per-pod hot-upgrade time on the local cluster (BENCH_PLANS plans of 3 pods, default 2).
	$(call say,Measuring hot upgrades on the local cluster)
	E2E_KUBECONFIG=$(CLUSTER_KUBECONFIG) E2E_LOCAL_CLUSTER=$(LOCAL_CLUSTER) E2E_CLUSTER_STATE=$(CLUSTER_STATE) \
	  go test -tags e2e -run '^$$' -bench HotUpgradePerPod -benchtime=$${BENCH_PLANS:-2}x ./test/e2e/ | tee -a bench-results.txt

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
install: manifests $(KUBECTL) ## Install the CRDs into the cluster of the current kubeconfig.
	$(call say,Installing CRDs into the current cluster)
	$(KUBECTL) apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: $(KUBECTL) ## Remove the CRDs (and every Meshlift object) from the current cluster.
	$(KUBECTL) delete --ignore-not-found -f config/crd/bases

.PHONY: run
run: install ## Run the operator on this machine against the current kubeconfig.
	$(call say,Running the operator against $$($(KUBECTL) config current-context))
	@# Webhooks need the in-cluster Service and certificates; a local run serves the controllers only.
	go run -ldflags '$(LDFLAGS)' . --log-format=console --metrics-bind-address=0 --health-probe-bind-address=:8081 --enable-webhooks=false

##@ Local cluster and demo (run as root)

.PHONY: demo
demo: DEPLOY_CONFIG = config/local-capture
demo: deploy plugin ## Everything: cluster, images, operator (with traffic capture), demo app, a live hot upgrade under traffic; then a summary.
	$(call say,Waiting until meshlift-cni is chained into the node's CNI configuration (traffic capture))
	$(K) -n meshlift-system rollout status daemonset/meshlift-cni --timeout=3m
	$(call say,Installing the demo mesh: SidecarVersions proxy-v1 (default) and proxy-v2, namespace meshlift-demo, MeshService demo)
	$(KUSTOMIZE) build config/demo/mesh | $(K) apply --server-side -f -
	$(call say,Waiting until the injector answers (a server-side dry run of a demo pod gets the sidecar))
	@for i in $$(seq 90); do \
	  $(K) -n meshlift-demo run injector-probe --image=meshlift/meshlift-demo:dev --labels=app=demo --dry-run=server \
	    -o jsonpath='{.spec.initContainers[*].name}' 2>/dev/null | grep -q meshlift-proxy-1 && exit 0; sleep 1; \
	done; echo "The injector did not answer within 90s: see $(K) -n meshlift-system logs deploy/meshlift-controller-manager"; exit 1
	$(call say,Installing the demo app: 3 replicas of meshlift-demo, each with the meshlift-proxy sidecar)
	$(KUSTOMIZE) build config/demo/app | $(K) apply --server-side -f -
	$(K) -n meshlift-demo rollout status deployment/demo --timeout=3m
	@for i in $$(seq 60); do \
	  [ "$$($(K) -n meshlift-demo get meshservice demo -o jsonpath='{.status.pods.injected}/{.status.pods.ready}')" = 3/3 ] && break; sleep 1; \
	done
	$(call say,The demo app runs with its sidecars; now a live hot upgrade under traffic)
	PATH="$(LOCALBIN):$$PATH" K="$(K)" M="$(KUBECTL) meshlift --kubeconfig $(CLUSTER_KUBECONFIG)" hack/demo-upgrade.sh
	@echo; $(K) get nodes -o wide; echo; $(K) -n meshlift-system get pods; echo; $(K) -n meshlift-demo get pods -o wide; \
	echo; $(K) get sidecarversions; echo; $(K) -n meshlift-demo get meshservices,upgradeplans; echo
	@echo "Meshlift demo is running."
	@echo "  kubeconfig:   export KUBECONFIG=$(CLUSTER_KUBECONFIG)"
	@echo "  kubectl:      $(KUBECTL) (or alias k='$(K)')"
	@echo "  plugin:       export PATH=$(LOCALBIN):$(KUBE_BIN):\$$PATH   # kubectl-meshlift and kubectl on the PATH (and KUBECONFIG above)"
	@echo "                kubectl meshlift status demo-upgrade -n meshlift-demo   # the upgrade you just watched"
	@echo "                kubectl meshlift proxy-status -n meshlift-demo          # each pod's proxy: version, slot, certificate"
	@echo "                kubectl meshlift get versions                           # which pods run which proxy version"
	@echo "                kubectl meshlift check                                  # is the installation healthy?"
	@echo "  try:          $(KUBECTL) -n meshlift-demo get meshservice demo -o yaml   # status: pods, version, conditions"
	@echo "                $(KUBECTL) -n meshlift-demo scale deployment demo --replicas=5  # watch status.pods follow"
	@echo "                $(KUBECTL) -n meshlift-system logs deploy/meshlift-controller-manager"
	@echo "                curl http://$$($(K) -n meshlift-demo get pods -o jsonpath='{.items[0].status.podIP}'):15000/ready   # slot 1's proxy: active, retiring or idle (slot 2 on :15001; /stats only through kubectl port-forward)"
	@echo "  again:        make demo   # upgrades the demo pods to the other version, under traffic"
	@echo "  stop it:      make cluster-down"

.PHONY: cluster-up
cluster-up: $(LOCAL_CLUSTER) ## Start (or reuse) the local single-node cluster.
	$(call say,Bringing up the local cluster (state in $(CLUSTER_STATE)))
	$(LOCAL_CLUSTER) --state-dir $(CLUSTER_STATE) --bin-dir $(KUBE_BIN) up

.PHONY: cluster-down
cluster-down: $(LOCAL_CLUSTER) ## Stop the local cluster and remove its state.
	$(LOCAL_CLUSTER) --state-dir $(CLUSTER_STATE) --bin-dir $(KUBE_BIN) down

.PHONY: cluster-status
cluster-status: $(LOCAL_CLUSTER) ## Show what of the local cluster runs.
	$(LOCAL_CLUSTER) --state-dir $(CLUSTER_STATE) --bin-dir $(KUBE_BIN) status

.PHONY: images
images: ## Build the image tarballs (operator, proxy, idle, demo, cni; and the demo's proxy versions) into bin/images.
	$(call say,Building images (tag $(IMAGE_TAG)) into $(IMAGES_DIR))
	go run ./hack/images --out $(IMAGES_DIR) --tag $(IMAGE_TAG)
	$(call say,Building the demo's proxy versions ($(DEMO_PROXY_VERSIONS)) into $(IMAGES_DIR)/proxy-<version>)
	@for v in $(DEMO_PROXY_VERSIONS); do go run ./hack/images --out $(IMAGES_DIR)/proxy-$$v --tag $$v proxy || exit 1; done

.PHONY: load-images
load-images: images cluster-up ## Load the image tarballs into the local cluster.
	$(LOCAL_CLUSTER) --state-dir $(CLUSTER_STATE) --bin-dir $(KUBE_BIN) load $(IMAGES_DIR)/*.tar $(IMAGES_DIR)/proxy-*/*.tar

# What deploy installs: config/local (config/default for a cluster without DNS); make demo installs
# config/local-capture (the same with traffic capture: the meshlift-cni DaemonSet and --capture-mode=cni).
DEPLOY_CONFIG ?= config/local

.PHONY: deploy
deploy: manifests load-images $(KUSTOMIZE) ## Install the operator (config/local: config/default for a cluster without DNS) into the local cluster.
	$(call say,Installing the operator from $(DEPLOY_CONFIG) into the local cluster)
	$(KUSTOMIZE) build $(DEPLOY_CONFIG) | $(K) apply --server-side --force-conflicts -f -
	@# The image tag does not change between builds: restart so the pods run the image just loaded.
	$(K) -n meshlift-system rollout restart deployment/meshlift-controller-manager
	$(K) -n meshlift-system rollout status deployment/meshlift-controller-manager --timeout=3m

.PHONY: docker-build
docker-build: ## Build the images with Docker (for machines that have a Docker engine).
	docker build --build-arg CMD=. --build-arg VERSION=$(VERSION) -t meshlift/meshlift-operator:$(IMAGE_TAG) .
	docker build --build-arg CMD=./cmd/meshlift-proxy --build-arg VERSION=$(VERSION) -t meshlift/meshlift-proxy:$(IMAGE_TAG) .
	docker build --build-arg CMD=./cmd/meshlift-idle --build-arg VERSION=$(VERSION) -t meshlift/meshlift-idle:$(IMAGE_TAG) .
	docker build --build-arg CMD=./cmd/meshlift-demo --build-arg VERSION=$(VERSION) -t meshlift/meshlift-demo:$(IMAGE_TAG) .

##@ kubectl plugin

# Where plugin-dist writes the release archives and the krew manifest (meshlift.yaml).
DIST ?= dist

.PHONY: plugin
plugin: ## Build the kubectl plugin into bin/kubectl-meshlift (and its kubectl completion helper).
	$(call say,Building bin/kubectl-meshlift and bin/kubectl_complete-meshlift)
	go build -ldflags '$(LDFLAGS)' -o $(LOCALBIN)/kubectl-meshlift ./cmd/kubectl-meshlift
	install -m 0755 cmd/kubectl-meshlift/kubectl_complete-meshlift $(LOCALBIN)/kubectl_complete-meshlift

.PHONY: plugin-dist
plugin-dist: ## Build release archives for linux/darwin × amd64/arm64 and the krew manifest into dist/.
	$(call say,Building kubectl-meshlift $(VERSION) for linux/darwin × amd64/arm64 into $(DIST))
	go run ./hack/plugin-dist --version $(VERSION) --out $(DIST) --ldflags '-s -w $(LDFLAGS)'
	$(call say,Verifying $(DIST)/meshlift.yaml against the archives it names)
	go run ./hack/plugin-dist --verify $(DIST)

##@ Tools (built into bin/ from Go modules, cached)

.PHONY: $(LOCAL_CLUSTER)
$(LOCAL_CLUSTER):
	@go build -o $(LOCAL_CLUSTER) ./hack/local-cluster

.PHONY: kube-binaries
kube-binaries: ## Build every Kubernetes binary of the local cluster (and kubectl).
	hack/kube/build.sh $(KUBE_BIN) etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl

$(KUBECTL):
	hack/kube/build.sh $(KUBE_BIN) kubectl

$(KUSTOMIZE):
	$(call say,Building kustomize $(KUSTOMIZE_VERSION) into bin/)
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv $(LOCALBIN)/kustomize $(KUSTOMIZE)

.PHONY: envtest-assets
envtest-assets: $(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd ## Build kube-apiserver and etcd for envtest.

$(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd &: hack/kube/go.mod hack/kube/go.sum
	$(call say,Building kube-apiserver v$(KUBE_VERSION) and etcd from Go modules into $(ENVTEST_ASSETS) (cold: about 7 minutes on 2 cores; cached afterwards))
	hack/kube/build.sh $(ENVTEST_ASSETS) kube-apiserver etcd
	@touch $(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd

$(CONTROLLER_GEN):
	$(call say,Building controller-gen $(CONTROLLER_TOOLS_VERSION) into bin/)
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)
