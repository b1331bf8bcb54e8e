# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Installs the Debian packages a target needs when missing (as root; otherwise says how).
PACKAGES := PYTHON=$(PYTHON) .ci/system-packages

.PHONY: run test test-unit fuzz web token broker lint docker-lint compose-test bench chaos venv minio clean

$(STAMP): pyproject.toml
	@$(PACKAGES) venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## minio: build the pinned MinIO (.minio-version) with go install unless a minio binary exists
minio: $(STAMP)
	@$(PACKAGES) minio
	@$(BIN)/python -c "from broker.dev import devstack; print('minio:', devstack.minio_binary())"

## run: PostgreSQL + MinIO + the broker on 127.0.0.1:8000, state in .state/ (Ctrl-C stops all)
run: $(STAMP)
	@$(PACKAGES) run
	$(BIN)/broker dev

## token: a bearer token for the local stack: make token SUB=alice [ADMIN=1] [SCOPE=uppy]
token: $(STAMP)
	@$(BIN)/broker token --env-file .state/dev.env --sub $(or $(SUB),alice) $(if $(ADMIN),--admin) $(if $(SCOPE),--scope $(SCOPE))

## broker: a broker command against the local stack, e.g. make broker ARGS="uploads list"
broker: $(STAMP)
	@set -a; . .state/dev.env; set +a; $(BIN)/broker $(ARGS)

define build_web
	cd clients/ts && npm ci --no-audit --no-fund && npm run check-generated && npm run build && npm test
	cd tests/e2e/web && npm ci --no-audit --no-fund && npm run build
	cd examples/nextjs && npm ci --no-audit --no-fund && NEXT_TELEMETRY_DISABLED=1 npm run build
endef

## web: the TypeScript client (built and unit-tested), the browser test pages and the Next.js
## example (next build: its typecheck too)
web: $(STAMP)
	@$(PACKAGES) web
	$(build_web)

## test: the whole suite against real PostgreSQL, MinIO and Chromium (builds web first)
# One package check for all of it (one apt-get update), then the web build, then pytest.
test: $(STAMP)
	@$(PACKAGES) test
	$(build_web)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-unit: the use cases on in-memory fakes and the pure rules; no services, under 10 s
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit --hypothesis-profile=quick $(PYTEST_ARGS)

## fuzz: a longer schemathesis run over every API operation, on a random seed (printed):
## make fuzz [EXAMPLES=300] [SEED=n] (make test runs a short derandomized one)
fuzz: $(STAMP)
	@$(PACKAGES) test
	@seed=$(or $(SEED),$$RANDOM$$RANDOM); echo "fuzz seed: $$seed (replay: make fuzz SEED=$$seed)"; \
	BROKER_FUZZ_SEED=$$seed BROKER_FUZZ_EXAMPLES=$(or $(EXAMPLES),300) \
	$(BIN)/python -m pytest tests/integration/test_openapi_fuzz.py -k every_operation $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check broker tests bench examples
	$(BIN)/ruff format --check broker tests bench examples
	$(BIN)/mypy broker
	$(BIN)/lint-imports

## docker-lint: validate compose.yaml against the compose-spec schema and lint the Dockerfile
docker-lint: $(STAMP)
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml compose.dev.yaml
	$(BIN)/hadolint Dockerfile Dockerfile.minio tests/compose/stand-ins/*.Dockerfile

## compose-test: build the images and run compose.yaml as users do: a round trip through the
## containers, a restart, the dev override's hot reload, bad configuration (root: docker.io,
## Compose v2 and dockerd are set up when missing; docs/testing.md)
compose-test: $(STAMP)
	tests/compose/run.sh $(PYTEST_ARGS)

## chaos: the full fault suite (tests/faults.py): 1,000 uploads per fault through three
## replicas behind HAProxy; one line per fault; fails on anything lost or finalized twice.
## make test runs it with 200 per fault (tests/integration/test_faults.py).
chaos: $(STAMP)
	@$(PACKAGES) test
	nice -n 10 $(BIN)/python -m tests.faults --uploads $(or $(UPLOADS),1000) $(if $(FAULTS),--faults $(FAULTS))

bench: $(STAMP)
	@$(PACKAGES) bench
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .state
