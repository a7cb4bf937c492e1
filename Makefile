# Token Orchestrator. `make help` lists the targets.

GO          ?= go
BIN         := bin/token-orchestrator
GO_VERSION  := 1.26
TEST_FLAGS  ?=
TEST_TIMEOUT ?= 20m

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z/_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

.PHONY: check-go
check-go:
	@command -v $(GO) >/dev/null || { echo "Go $(GO_VERSION) or newer is needed: https://go.dev/dl/"; exit 1; }

.PHONY: run
run: check-go ## Run the service (embedded PostgreSQL under .data/ unless DATABASE_URL is set)
	$(GO) run ./cmd/token-orchestrator

# The version and commit that `token-orchestrator version` shows, stamped at
# link time. Outside a git clone they stay empty and the binary falls back to
# what the Go toolchain recorded (see internal/buildinfo).
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
BUILDINFO := github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo
LDFLAGS  := -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).revision=$(REVISION)

.PHONY: build
build: check-go ## Build the binary into bin/, stamped with VERSION and REVISION (from git by default)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/token-orchestrator

# The Go client, a module of its own (client/go.mod) so that programs that
# import it get the standard library only. go test ./... runs its tests
# through test/goclient, which starts the server its examples talk to.
GO_CLIENT := client

# The tests need a PostgreSQL: a server on 127.0.0.1:5432, the server
# binaries (the tests then start their own cluster), Docker, or
# TEST_DATABASE_URL. On a Debian machine with none of these, as root, the
# binaries are installed.
.PHONY: ensure-postgres
ensure-postgres:
	@if [ -n "$$TEST_DATABASE_URL" ] || pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
		|| command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| docker info >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing the PostgreSQL server binaries for the tests (apt-get install postgresql)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "The tests need PostgreSQL: run one on 127.0.0.1:5432, install the server binaries"; \
		echo "(apt-get install postgresql, brew install postgresql), start Docker, or set TEST_DATABASE_URL."; \
		exit 1; \
	fi

# The dashboard's browser test drives Chromium. Where it is missing, it is
# installed with apt when we are root on a machine that has apt-get;
# elsewhere this stops with a message saying what to do. BROWSER_TESTS=skip
# leaves the browser test out instead (the test then says it was skipped).
CHROMIUM_NAMES := chromium chromium-browser google-chrome google-chrome-stable

.PHONY: ensure-chromium
ensure-chromium:
	@if [ "$$BROWSER_TESTS" = skip ] || [ -n "$$CHROMIUM" ]; then :; \
	elif for name in $(CHROMIUM_NAMES); do command -v $$name >/dev/null && exit 0; done; false; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Chromium for the dashboard's browser test (apt-get install chromium)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
			|| { echo "Chromium could not be installed with apt-get; the dashboard's browser test needs it."; exit 1; }; \
	else \
		echo "The dashboard's browser test needs Chromium, and none was found ($(CHROMIUM_NAMES))."; \
		echo "Install it (apt-get install chromium, or brew install --cask chromium), set CHROMIUM to a"; \
		echo "Chrome or Chromium binary, or run with BROWSER_TESTS=skip to leave the browser test out."; \
		exit 1; \
	fi

# The failover test (test/failover) runs a pg_auto_failover formation on
# loopback. Where pg_autoctl is missing it is installed with apt when we are
# root on a machine that has apt-get; elsewhere this stops with a message.
# The packages are Debian's, for the PostgreSQL 15 that Debian 12 ships.
PG_AUTO_FAILOVER_PACKAGES ?= postgresql-15-auto-failover pg-auto-failover-cli

.PHONY: ensure-pg-auto-failover
ensure-pg-auto-failover:
	@if command -v pg_autoctl >/dev/null && ls /usr/share/postgresql/*/extension/pgautofailover.control >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing pg_auto_failover for the failover test (apt-get install $(PG_AUTO_FAILOVER_PACKAGES))"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PG_AUTO_FAILOVER_PACKAGES) >/dev/null; } \
			|| { echo "pg_auto_failover could not be installed with apt-get; the failover test needs it."; exit 1; }; \
	else \
		echo "The failover test needs pg_auto_failover (pg_autoctl and its PostgreSQL extension):"; \
		echo "apt-get install $(PG_AUTO_FAILOVER_PACKAGES), and runs as root (its nodes run as the postgres user)."; \
		exit 1; \
	fi

# FAILOVER_ROUNDS repeats each fault (default once) for figures.
FAILOVER_TIMEOUT ?= 30m

.PHONY: test-failover
test-failover: check-go ensure-pg-auto-failover ## Fail a pg_auto_failover primary over under load, synchronous and asynchronous replication (a few minutes; as root)
	FAILOVER_TESTS=on $(GO) test -count=1 -v -timeout $(FAILOVER_TIMEOUT) -run 'TestFailover|TestChecker' ./test/failover

# Screenshots of the dashboard, taken by its browser test, land here.
SCREENSHOTS_DIR ?= $(CURDIR)/tmp/screenshots

.PHONY: test
test: check-go ensure-postgres ensure-chromium ensure-python helm-check typescript ## Run every test against a real PostgreSQL (local, embedded or container), the dashboard's in Chromium
	$(GO) vet ./...
	cd $(GO_CLIENT) && $(GO) vet ./...
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory cross-build
	@mkdir -p $(SCREENSHOTS_DIR)
	HELM=$(HELM) SCREENSHOTS_DIR=$(SCREENSHOTS_DIR) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory compose-check

# The tests run on Linux only; this at least keeps every package, tests
# included (go vet compiles them), building for macOS and Windows, where
# developers run the server with the embedded database. Needs no C
# compiler: nothing here uses cgo. The Go client is a module of its own,
# which ./... in the root does not enter: it is vetted in its directory.
CROSS_GOOS := darwin windows

.PHONY: cross-build
cross-build: check-go ## Compile and vet every package, tests included, for macOS and Windows
	@for goos in $(CROSS_GOOS); do \
		for dir in . $(GO_CLIENT); do \
			echo "GOOS=$$goos $(GO) vet ./... (in $$dir)"; \
			(cd $$dir && GOOS=$$goos CGO_ENABLED=0 $(GO) vet ./...) || exit 1; \
		done; \
	done

.PHONY: test/go-client
test/go-client: check-go ensure-postgres ## Run the Go client's tests, its own module's included, and build a program of another module that imports it
	$(GO) test -count=1 -v ./test/goclient

.PHONY: test/browser
test/browser: check-go ensure-postgres ensure-chromium ## Run the dashboard's browser test alone; screenshots in tmp/screenshots/
	@mkdir -p $(SCREENSHOTS_DIR)
	SCREENSHOTS_DIR=$(SCREENSHOTS_DIR) $(GO) test -count=1 -v -run TestDashboardInABrowser ./internal/dashboard

.PHONY: screenshots
screenshots: test/browser ## Update the dashboard's screenshots in docs/ from the browser test
	cp $(SCREENSHOTS_DIR)/dashboard.png $(SCREENSHOTS_DIR)/dashboard-narrow.png docs/

# Needs no Docker engine: only the compose tool, which parses the file.
# Skipped, never failed, where neither docker-compose nor the compose plugin
# of docker is installed.
.PHONY: compose-check
compose-check: ## Validate docker-compose.yml (skipped without docker-compose)
	@if command -v docker-compose >/dev/null 2>&1; then \
		docker-compose config --quiet && echo "docker-compose.yml is valid"; \
	elif docker compose version >/dev/null 2>&1; then \
		docker compose config --quiet && echo "docker-compose.yml is valid"; \
	else \
		echo "compose-check: skipped, docker-compose is not installed (apt-get install docker-compose)"; \
	fi

# Tools the project uses but its code does not import are built from their
# Go module at a pinned version (helm would drag Kubernetes into go.mod as a
# tool dependency), once per machine: outside the clone, in a folder named
# after the version (TOOLS_CACHE), so that a fresh clone reuses them. The
# first build of helm takes a few minutes. Without a home directory they
# go to bin/tools in the clone.
TOOLS_CACHE  ?= $(if $(HOME),$(HOME)/.cache/tokenorchestrator/tools,$(CURDIR)/bin/tools)
HELM_VERSION := v3.22.0
TOOLS_DIR    := $(TOOLS_CACHE)/helm-$(HELM_VERSION)
HELM         := $(TOOLS_DIR)/helm
CHART        := deploy/helm/token-orchestrator

.PHONY: tools/helm
tools/helm: check-go ## Install helm $(HELM_VERSION) into TOOLS_CACHE (skipped when there)
	@if [ -x $(HELM) ] && $(GO) version -m $(HELM) | grep -Eq "^[[:space:]]+mod[[:space:]]+helm.sh/helm/v3[[:space:]]+$(HELM_VERSION)[[:space:]]"; then :; else \
		echo "Building helm $(HELM_VERSION) into $(TOOLS_DIR) (a few minutes)"; \
		GOBIN=$(TOOLS_DIR) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); \
	fi

# golangci-lint, built the same way (as a tool dependency it would bring
# hundreds of modules into go.mod); the first build takes a few minutes. It
# refuses to lint code for a newer Go than the one it was built with, so it
# is built again when the local Go is not the one that built it.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT_DIR     := $(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_LINT_VERSION)
GOLANGCI_LINT         := $(GOLANGCI_LINT_DIR)/golangci-lint

.PHONY: tools/golangci-lint
tools/golangci-lint: check-go ## Install golangci-lint $(GOLANGCI_LINT_VERSION) into TOOLS_CACHE (skipped when there)
	@if [ -x $(GOLANGCI_LINT) ] && $(GO) version -m $(GOLANGCI_LINT) | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/golangci/golangci-lint/v2[[:space:]]+$(GOLANGCI_LINT_VERSION)[[:space:]]" \
		&& [ "$$($(GO) version -m $(GOLANGCI_LINT) | head -n 1 | awk '{print $$2}')" = "$$($(GO) env GOVERSION)" ]; then :; else \
		echo "Building golangci-lint $(GOLANGCI_LINT_VERSION) into $(GOLANGCI_LINT_DIR) (a few minutes)"; \
		GOBIN=$(GOLANGCI_LINT_DIR) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); \
	fi

# The linters and their settings are in .golangci.yml, which golangci-lint
# also finds from the Go client's module (a module of its own, which ./...
# in the root does not enter).
.PHONY: lint
lint: tools/golangci-lint ## Lint the Go code of the server and of the Go client with golangci-lint (.golangci.yml)
	$(GOLANGCI_LINT) run ./...
	cd $(GO_CLIENT) && $(GOLANGCI_LINT) run ./...

# Lints the chart and renders it with the defaults and with every optional
# part on; deploy/helm/chart_test.go checks the rendered objects against
# the server. A helm built with go install does not know its Kubernetes
# version (it assumes 1.20), hence --kube-version.
KUBE_VERSION := 1.30.0
.PHONY: helm-check
helm-check: tools/helm ## Lint and render the Helm chart
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --values $(CHART)/ci/all-on-values.yaml
	$(HELM) template orchestrator $(CHART) --kube-version $(KUBE_VERSION) >/dev/null
	$(HELM) template orchestrator $(CHART) --kube-version $(KUBE_VERSION) --values $(CHART)/ci/all-on-values.yaml >/dev/null

# The TypeScript client: dependencies exactly as locked, the check that its
# generated types match internal/api/openapi.yaml, and the build whose tests
# clients/typescript/client_test.go runs against the server binary (within
# go test ./...); package_test.go there packs it with npm pack, using the
# compiler installed here. Without npm it stops with a message under CI, and is left
# out elsewhere (that test then says it was skipped).
TS_CLIENT := clients/typescript

.PHONY: typescript
typescript: ## Install, type-check and build the TypeScript client (npm ci)
	@if ! command -v npm >/dev/null; then \
		if [ -n "$$CI" ]; then echo "The TypeScript client needs Node 20 and npm: https://nodejs.org/"; exit 1; fi; \
		echo "typescript: skipped, npm is not installed (Node 20 and npm build the TypeScript client)"; \
	else \
		cd $(TS_CLIENT) && npm ci --no-audit --no-fund && npm run --silent check-schema && npm run --silent build; \
	fi

.PHONY: test/typescript
test/typescript: typescript ensure-postgres ## Run the TypeScript client's tests against the server binary, and pack and install its package
	$(GO) test -count=1 -v -run 'TestTypeScript(Client|Package)$$' ./$(TS_CLIENT)

# The Python client's tests (clients/python/client_test.go runs pytest
# within go test ./...) use Debian's interpreter and packages: another
# python3 may come first on PATH without them. Where they are missing they
# are installed with apt when we are root on a machine that has apt-get;
# elsewhere this stops with a message under CI, and is left out otherwise
# (that test then says it was skipped).
PYTHON       ?= /usr/bin/python3
PY_CLIENT    := clients/python
PY_MODULES   := httpx, pytest, pytest_asyncio, hatchling, build, venv
PY_PACKAGES  := python3 python3-httpx python3-pytest python3-pytest-asyncio python3-hatchling python3-build python3-venv python3-pip

.PHONY: ensure-python
ensure-python:
	@if $(PYTHON) -c 'import $(PY_MODULES)' 2>/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Python and its packages for the Python client's tests (apt-get install $(PY_PACKAGES))"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PY_PACKAGES) >/dev/null; } \
			&& $(PYTHON) -c 'import $(PY_MODULES)' \
			|| { echo "$(PYTHON) still lacks some of $(PY_MODULES) after apt-get install $(PY_PACKAGES)"; \
			     echo "(PYTHON must be Debian's interpreter, /usr/bin/python3, to see Debian's packages)."; \
			     if [ -n "$$CI" ]; then exit 1; fi; }; \
	elif [ -n "$$CI" ]; then \
		echo "The Python client's tests need $(PYTHON) with the modules $(PY_MODULES)"; \
		echo "(apt-get install $(PY_PACKAGES)), or PYTHON set to an interpreter that has them."; \
		exit 1; \
	else \
		echo "ensure-python: skipped, $(PYTHON) lacks some of $(PY_MODULES) (apt-get install $(PY_PACKAGES));"; \
		echo "the Python client's tests will say they were skipped."; \
	fi

.PHONY: test/python
test/python: check-go ensure-postgres ensure-python ## Run the Python client's tests (pytest) against the server binary
	PYTHON=$(PYTHON) $(GO) test -count=1 -v -run TestPythonClient ./$(PY_CLIENT)

.PHONY: lint/python
lint/python: ## Type-check the Python client with mypy --strict, for Python 3.9 and for this one (apt-get install mypy)
	cd $(PY_CLIENT) && $(PYTHON) -m mypy --strict --python-version 3.9 src && $(PYTHON) -m mypy --strict src

.PHONY: test/race
test/race: check-go ensure-postgres ensure-chromium ## Run the tests with the race detector
	$(GO) test -count=1 -race -timeout $(TEST_TIMEOUT) ./...

.PHONY: bench
bench: build ensure-postgres ## Run the benchmark harness on its own PostgreSQL cluster and write docs/benchmarks.md (about 35 minutes: the held snapshot runs on the primary and on a standby; every endpoint is measured at 10,000 keys, 1,000,000 and 2,000 pools), then what the proxy adds to a request
	$(GO) run ./cmd/bench
	@$(MAKE) --no-print-directory bench-proxy

.PHONY: bench/quick
bench/quick: build ensure-postgres ## A short smoke run of the benchmark harness
	$(GO) run ./cmd/bench -quick

.PHONY: bench-reports
bench-reports: check-go ensure-postgres ## Time every report query on a history of 1,000,000 rows (a few minutes; not part of make test)
	$(GO) test -run '^$$' -bench '^BenchmarkReports$$' -benchtime 5x -timeout 30m ./db/dbsqlc

.PHONY: bench-proxy
bench-proxy: check-go ensure-postgres ## What token-orchestrator proxy adds to a request: a trivial upstream directly and through the proxy (about a minute; not part of make test)
	$(GO) test -run '^$$' -bench '^BenchmarkProxy$$' -benchtime 3s -count 3 ./internal/proxy

.PHONY: generate
generate: check-go ## Regenerate the query code from db/queries with sqlc
	$(GO) tool sqlc generate

.PHONY: verify
verify: generate ## Fail if the generated code is not up to date
	git diff --exit-code -- db/dbsqlc

.PHONY: fmt
fmt: ## Format the Go code
	gofmt -w client cmd internal db migrations test

.PHONY: clean
clean: ## Remove built binaries (keeps the embedded database's data)
	rm -rf bin
