# kserve-gitops: every target bootstraps the virtualenv it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
KGOPS  := $(VENV)/bin/kgops
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
# MLServer's own virtualenv (its fastapi/pydantic pins conflict with kserve's): constraints-mlserver.txt.
MLVENV  ?= .venv-mlserver
MLSTAMP := $(MLVENV)/.installed-$(shell cat constraints-mlserver.txt | sha256sum | cut -c1-12)
# Model server runtime of serve, demo and bench: sklearnserver (KServe's) or mlserver (V2 only).
RUNTIME ?= sklearnserver
RUNTIME_STAMPS = $(STAMP) $(if $(filter mlserver,$(RUNTIME)),$(MLSTAMP))
$(if $(filter-out sklearnserver mlserver,$(RUNTIME)),$(error RUNTIME=$(RUNTIME): expected sklearnserver or mlserver))

ENV      ?= dev
# pytest-xdist processes of make test, each taking whole test files (0: one process).
TEST_WORKERS ?= 4
# e2e cluster provider: kind where Docker runs, else kwok (control plane built from source).
CLUSTER  ?= $(if $(shell docker info >/dev/null 2>&1 && echo y),kind,kwok)
MODEL    ?= sklearn-iris
PORT     ?= 8080
WORKERS  ?= 1
# Load generator processes (Locust workers) of make loadtest / loadtest-ui; 0: one process.
LOAD_WORKERS ?= 0
REMOTE_WORKERS ?= 0
MASTER_HOST ?= 127.0.0.1
MASTER_PORT ?= 5557
TARGET   ?= http://127.0.0.1:$(PORT)
RATE     ?=
DURATION ?=
USERS    ?=
PROTOCOL ?= v1
# The protocol serve/demo/load/canary targets use: MLServer's V2 unless PROTOCOL is given.
PROTO = $(if $(and $(filter mlserver,$(RUNTIME)),$(filter file,$(origin PROTOCOL))),v2,$(PROTOCOL))
$(if $(and $(filter mlserver,$(RUNTIME)),$(filter v1,$(PROTO))),$(error RUNTIME=mlserver serves PROTOCOL=v2 only: MLServer has no V1 :predict endpoint))
HOST     ?=
BATCH    ?= 32
INPUT    ?=
OUTPUT   ?=
FROM     ?=
TO       ?=
BASE     ?=
FORMAT   ?= text
VERSION  ?=
DELIVERY ?=
PERCENT  ?=
STABLE   ?=
CANARY   ?=
HOST_STABLE ?=
HOST_CANARY ?=

.PHONY: help venv mlserver-venv gitleaks secret-scan test test-clusters lint promtool chromium loadtest-worker train crds charts validate render diff serve loadtest loadtest-ui demo bench predict e2e e2e-reliability e2e-plan bench-e2e bench-cluster binaries images image-tools node-tools node-binaries platform canary promote rollback gate canary-analysis registry monitoring policy clean

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## Create .venv with the pinned dependencies

$(MLSTAMP): constraints-mlserver.txt
	@test -x $(MLVENV)/bin/python || $(PYTHON) -m venv $(MLVENV)
	$(MLVENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints-mlserver.txt mlserver mlserver-sklearn scikit-learn
	@rm -f $(MLVENV)/.installed-* && touch $@

mlserver-venv: $(MLSTAMP) ## Create .venv-mlserver: MLServer at the version of the cluster's kserve-mlserver image

# gitleaks at versions.yaml secretScan.gitleaks, built from its Go module into the binaries cache.
gitleaks: $(STAMP) ## Build the credential scanner (gitleaks, pinned; cached like make binaries)
	@$(KGOPS) binaries --scanner

test: $(STAMP) $(MLSTAMP) lint gitleaks ## The offline suite: lint, then pytest over TEST_WORKERS processes (MLServer's venv too: tests serve with it; gitleaks: policy's scan)
	$(PY) -m pytest -m "not e2e and not kwok and not node" -n $(TEST_WORKERS) --dist loadfile

test-clusters: $(STAMP) ## The tests that start kwok clusters, the controllers, Flux and the real node (after make binaries DELIVERY=flux node-binaries images; root)
	$(PY) -m pytest -m "kwok or node"

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# promtool only, from Debian's prometheus package, unpacked (no daemon, no service started).
promtool: ## Put promtool in .cache/bin unless one is on PATH (Debian/Ubuntu)
	@if command -v promtool >/dev/null || test -x .cache/bin/promtool; then exit 0; fi; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd "$$tmp" && \
	{ apt-get download prometheus >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && apt-get download prometheus; }; } && \
	dpkg -x prometheus_*.deb x && \
	install -D -m 0755 x/usr/bin/promtool "$(CURDIR)/.cache/bin/promtool" && \
	"$(CURDIR)/.cache/bin/promtool" --version | head -1

# Chromium for the dashboard's browser test (Playwright drives it; no browser download).
chromium: ## Install Debian's chromium unless one is on PATH (Debian/Ubuntu)
	@if command -v chromium >/dev/null; then exit 0; fi; \
	$(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium && \
	chromium --version

lint: $(STAMP) ## ruff, yamllint and the package's layers (import-linter: [tool.importlinter])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/yamllint -s .
	$(VENV)/bin/lint-imports --no-logo --no-cache

train: $(STAMP) ## Retrain models/sklearn-iris (deterministic)
	$(KGOPS) train

crds: $(STAMP) ## Fill the CRD cache (CRD_DIR, or download with sha256 check)
	$(KGOPS) crds

charts: $(STAMP) ## Fill the upstream chart cache .cache/charts (CHART_DIR, or pull from the repositories the manifests name)
	$(KGOPS) charts

validate: $(STAMP) gitleaks ## Render and validate every chart scenario and environment (with make policy's checks)
	$(KGOPS) validate

render: $(STAMP) ## Print the rendered manifests of ENV
	@$(KGOPS) render $(ENV)

# Exit status of the module: 0 no rendered change, 1 changes (make then reports Error 1), 2 error.
diff: $(STAMP) ## Rendered change per environment vs BASE (default: merge base with main) [FORMAT=markdown]; two environments: FROM=staging TO=prod
	@$(if $(FROM)$(TO),$(KGOPS) render --diff $(FROM) $(TO),$(KGOPS) diff $(if $(BASE),--base $(BASE)) --format $(FORMAT))

serve: $(RUNTIME_STAMPS) ## Serve the model locally on PORT [RUNTIME=sklearnserver|mlserver WORKERS= SERVE_ARGS=]
	$(if $(filter mlserver,$(RUNTIME)),$(KGOPS) serve-mlserver --model-name $(MODEL) --http-port $(PORT) --workers $(WORKERS) $(SERVE_ARGS),$(KGOPS) serve --model-name $(MODEL) --http-port $(PORT) --workers $(WORKERS) $(SERVE_ARGS))

LOAD_ARGS = --target $(TARGET) --model $(MODEL) --protocol $(PROTO) --env $(ENV) $(if $(RATE),--rate $(RATE)) $(if $(USERS),--users $(USERS)) $(if $(HOST),--host-header $(HOST)) --workers $(LOAD_WORKERS) --remote-workers $(REMOTE_WORKERS) --master-port $(MASTER_PORT)

loadtest: $(STAMP) ## Open-loop load test, SLO verdict, reports/: TARGET RATE DURATION PROTOCOL HOST ENV LOAD_WORKERS REMOTE_WORKERS (defaults: config/slo.yaml)
	$(KGOPS) loadtest $(LOAD_ARGS) $(if $(DURATION),--duration $(DURATION))

loadtest-ui: $(STAMP) ## Locust web dashboard on :8089 against TARGET, with an SLO tab [LOAD_WORKERS=]
	$(KGOPS) loadtest $(LOAD_ARGS) --ui

loadtest-worker: $(STAMP) ## A load worker for a master on another machine: make loadtest-worker MASTER_HOST=10.0.0.5
	$(KGOPS) loadtest --worker --master-host $(MASTER_HOST) --master-port $(MASTER_PORT)

demo: $(RUNTIME_STAMPS) ## Train if needed, validate, serve locally, load-test, print the SLO verdict [RUNTIME=mlserver: V2]
	$(KGOPS) demo --env $(ENV) --runtime $(RUNTIME) --protocol $(PROTO) $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION))

bench: $(STAMP) $(MLSTAMP) ## Benchmarks into BENCHMARKS.md (waits for a quiet machine), both runtimes side by side in 5 pinned rounds, the cluster sections from benchmarks/cluster-path.json and cluster-scaleout.json [BENCH_ARGS="--nice -10 --cluster": then bench-cluster's two runs (--cluster-env dev, --cluster-scaleout-env staging), as root with the node tools, else says why not]
	$(KGOPS) bench $(BENCH_ARGS)

predict: $(STAMP) ## Batch predictions: make predict INPUT=rows.csv [OUTPUT= TARGET= BATCH= PROTOCOL= HOST=]
	$(KGOPS) predict --input $(INPUT) $(if $(OUTPUT),--output $(OUTPUT)) --target $(TARGET) --batch $(BATCH) --protocol $(PROTO) --model-name $(MODEL) $(if $(HOST),--host-header $(HOST))

monitoring: $(STAMP) ## Regenerate the SLO alert rules and Grafana dashboards from config/slo.yaml
	$(KGOPS) alerts
	$(KGOPS) dashboard

# Folders the credential scan covers (default: the work tree); CI: SCAN=reports before uploading.
SCAN ?=
secret-scan: $(STAMP) gitleaks ## gitleaks over SCAN (folders; default the work tree): CI runs SCAN=reports before it uploads them
	$(KGOPS) secret-scan $(SCAN)

policy: $(STAMP) gitleaks ## Security policies over every environment and chart scenario, and the credential scan (gitleaks, config/gitleaks.toml)
	$(KGOPS) policy

platform: $(STAMP) ## Components and versions Flux and Argo CD install per environment, then check them
	@$(KGOPS) platform
	@$(KGOPS) platform --check

e2e-plan: $(STAMP) ## Print the ordered e2e plan for ENV [CLUSTER=kind|kwok] without touching a cluster
	@$(KGOPS) e2e --env $(ENV) --cluster $(CLUSTER) --plan

e2e: $(STAMP) $(if $(filter node,$(CLUSTER)),node-tools image-tools) ## Full platform and model on a cluster: CLUSTER=kind (Docker), kwok (built from source) or node (kwok plus a real node; root); KEEP=1 keeps it; DELIVERY=flux: Flux's controllers reconcile clusters/ENV (kwok)
	$(KGOPS) e2e --env $(ENV) --cluster $(CLUSTER) $(if $(filter 1,$(KEEP)),--keep) $(if $(DELIVERY),--delivery $(DELIVERY))

e2e-reliability: $(STAMP) node-tools image-tools ## The real-node e2e, then the reliability scenarios under open-loop load (container kill, kubelet and containerd restart, a broken release Flux rolls back, a canary rollout, scale from zero; SCENARIOS=a,b for some), each against its budget (root)
	$(KGOPS) e2e --env $(ENV) --cluster node --reliability $(if $(filter 1,$(KEEP)),--keep)

# The environment whose scale-out bench-cluster measures (dev declares maxReplicas 1; staging 1-4
# replicas of 250m CPU); empty: ENV's own, if its configuration allows one.
SCALEOUT_ENV ?= staging

bench-cluster: $(STAMP) node-tools image-tools ## Two real-node e2e runs (root): ENV's parts but the scale-out (SLO-rate latency on local, Service, port-forward, activator; KServe's table 5/50/500 req/s; highest rate per path; 5 cold starts when minReplicas is 0) into benchmarks/cluster-path.md, then SCALEOUT_ENV's (staging) scale-out ramp into benchmarks/cluster-scaleout.md; plots beside them
	$(KGOPS) bench-cluster --env $(ENV) $(if $(SCALEOUT_ENV),--without scaleout)
	$(if $(SCALEOUT_ENV),$(KGOPS) bench-cluster --env $(SCALEOUT_ENV) --parts scaleout --out benchmarks/cluster-scaleout.md)

bench-e2e: $(STAMP) ## Warm kwok e2e of every environment, timed per layer, into benchmarks/kwok-e2e.md
	$(KGOPS) bench-e2e

binaries: $(STAMP) ## Build the kwok cluster's pinned binaries, gitleaks and the controllers from Go modules (cached by version); DELIVERY=flux: Flux's too
	$(KGOPS) binaries $(if $(filter flux,$(DELIVERY)),--flux)
	$(KGOPS) controllers

# What the image builds need from Debian: gcc and libc6-dev (the static pause), mmdebstrap (the
# sklearnserver image's root file system; it needs root).
image-tools: ## Install gcc, libc6-dev and mmdebstrap unless present (Debian/Ubuntu)
	@if command -v gcc >/dev/null && test -f /usr/lib/x86_64-linux-gnu/libc.a -o -f /usr/lib/aarch64-linux-gnu/libc.a && command -v mmdebstrap >/dev/null; then exit 0; fi; \
	$(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev mmdebstrap && \
	mmdebstrap --version

# What the real node needs from Debian: iptables (kubelet, kube-proxy, the CNI plugins),
# conntrack (kube-proxy), libseccomp-dev (runc's seccomp, built with cgo).
node-tools: ## Install iptables, conntrack, ipset (kube-router's NetworkPolicy firewall) and libseccomp-dev unless present (Debian/Ubuntu)
	@if command -v iptables >/dev/null && command -v conntrack >/dev/null && command -v ipset >/dev/null && test -f /usr/include/seccomp.h; then exit 0; fi; \
	$(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iptables conntrack ipset libseccomp-dev && \
	iptables --version

node-binaries: $(STAMP) node-tools ## Build the real node's binaries (kubelet, kube-proxy, containerd, runc, CNI plugins, CoreDNS, kube-router) from Go modules
	$(KGOPS) node-binaries

images: $(STAMP) image-tools ## Build the real node's images (pause, sklearnserver, Knative) from the pinned sources, cached by version (root)
	$(KGOPS) images

gate: $(STAMP) ## Quality gate: make gate MODEL=sklearn-iris VERSION=v2 ENV=prod (exit 1 with the reason)
	$(KGOPS) gate --model $(MODEL) --version $(VERSION) --env $(ENV)

canary: $(STAMP) ## Start or ramp a canary in ENV's values file: make canary VERSION=v2 ENV=staging PERCENT=10
	$(KGOPS) rollout canary --model $(MODEL) --env $(ENV) $(if $(VERSION),--version $(VERSION)) $(if $(PERCENT),--percent $(PERCENT))

promote: $(STAMP) ## Promote ENV's canary to 100% and record it as stable: make promote ENV=staging
	$(KGOPS) rollout promote --model $(MODEL) --env $(ENV)

rollback: $(STAMP) ## Roll ENV's canary back (run twice: pin 0% + restore, then finish): make rollback ENV=staging
	$(KGOPS) rollout rollback --model $(MODEL) --env $(ENV)

registry: $(STAMP) ## Model versions and what each environment serves, then check they agree
	@$(KGOPS) registry --model $(MODEL)
	@$(KGOPS) registry --model $(MODEL) --check

canary-analysis: $(STAMP) ## Load-test STABLE and CANARY side by side, decide promote/hold/rollback [HOST_STABLE HOST_CANARY RATE DURATION ENV]
	$(KGOPS) canary-analysis --stable $(STABLE) --canary $(CANARY) --env $(ENV) --model $(MODEL) --protocol $(PROTO) $(if $(HOST_STABLE),--host-header-stable $(HOST_STABLE)) $(if $(HOST_CANARY),--host-header-canary $(HOST_CANARY)) $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION))

clean: ## Remove the virtualenv, caches and reports
	rm -rf $(VENV) $(MLVENV) .cache reports .pytest_cache .ruff_cache
