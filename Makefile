# kitehooks: the commands users run. `make dev` and `make test` are the whole set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
# The local tools import the layer's package the way the functions do.
RUN         := PYTHONPATH=$(CURDIR)/layers/kitehooks:$(CURDIR) $(PY)
# sam build looks for python3.13 on PATH: the venv's own interpreter satisfies it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0

STACK       ?= kitehooks
FN          ?= PostbackFunction
EVENT       ?= events/postback.json

.PHONY: help venv test lint typecheck template unit integration e2e build deploy invoke start-api bench dev postback queue sessions redrive clean
.PHONY: logout session-status expire set-credentials orders reconcile

help: ## list the commands
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt layers/kitehooks/requirements.txt
	@test -x $(PY) || { py=$$(scripts/find-python.sh 3.13) && echo "creating $(VENV) with $$py" && $$py -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with pinned dev requirements

# One worker per core; each test file stays on one worker, so its module fixtures are made once.
test: $(STAMP) lint typecheck template ## every test tier, lint, type check, sam validate --lint, cfn-lint
	$(BIN)/pytest -n auto --dist loadfile

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

template: $(STAMP) ## sam validate --lint and cfn-lint on template.yaml
	$(BIN)/sam validate --lint --template template.yaml --region ap-south-1
	$(BIN)/cfn-lint template.yaml

unit: $(STAMP) ## unit tests only
	$(BIN)/pytest tests/unit

integration: $(STAMP) ## integration tests only (moto server, Kite simulator)
	$(BIN)/pytest tests/integration

e2e: $(STAMP) ## end-to-end tests only (the local stack over HTTP)
	$(BIN)/pytest tests/e2e

# Debian's headless Chromium and its driver: installed with apt-get when run as root, else the
# tests are skipped with one line. Screenshots of each page go to test-output/browser/.
.PHONY: browser-test
browser-test: $(STAMP) ## the login pages in headless Chromium against the local stack
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "browser-test skipped: needs /usr/bin/chromium and /usr/bin/chromedriver (as root: apt-get install chromium chromium-driver)"; \
	    exit 0; \
	  fi; \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	    || { echo "browser-test skipped: apt-get could not install chromium chromium-driver"; exit 0; }; \
	fi; \
	$(BIN)/pytest tests/browser

bench: $(STAMP) ## the postback path in both OrderConfirmation modes, each against a baseline with the same I/O: first invocation, warm CPU, log bytes, layer, cost (benchmarks/RESULTS.md)
	$(RUN) benchmarks/postback.py
	$(RUN) benchmarks/reconcile.py

# Lambda's file system is read-only, so Python cannot cache bytecode there: without .pyc files in
# the package every cold start compiles the layer's modules again (~30-50 ms measured for the
# postback function). Compiled with the venv's Python 3.13, the runtime's version; unchecked-hash
# because the zip's timestamps are not the source's.
COMPILE_BUILD := $(PY) -m compileall -q --invalidation-mode unchecked-hash .aws-sam/build

build: $(STAMP) ## sam build, then compile the bytecode into the build
	$(BIN)/sam build
	$(COMPILE_BUILD)

# The AWS credentials and region are checked before anything is built or asked. The first deploy is
# guided (its answers are saved in samconfig.toml, s3_prefix among them); GUIDED=1 asks again.
deploy: $(STAMP) ## check AWS credentials and region, sam build, sam deploy (guided the first time)
	@$(PY) scripts/aws_setup.py check
	$(BIN)/sam build
	$(COMPILE_BUILD)
	@if [ -z "$(GUIDED)" ] && grep -q '^s3_prefix' samconfig.toml; then $(BIN)/sam deploy; else $(BIN)/sam deploy --guided; fi

# STACK counts only when given on the command line; else samconfig.toml's stack_name (kitehooks).
set-credentials: $(STAMP) ## store your Kite app's api_key and api_secret in the deployed stack
	@$(PY) scripts/aws_setup.py set-credentials $(if $(filter command line,$(origin STACK)),--stack '$(STACK)') $(if $(SECRET_ID),--secret-id '$(SECRET_ID)')

# On Linux, containers reach the host as host.docker.internal only with an explicit mapping.
DOCKER_HOST_IP ?=
SAM_LOCAL_ARGS := --env-vars events/env.json $(if $(DOCKER_HOST_IP),--add-host host.docker.internal:$(DOCKER_HOST_IP))

invoke: build ## sam local invoke FN=.. EVENT=.. against `make dev DEV_ARGS=--bind=0.0.0.0` (needs Docker)
	$(BIN)/sam local invoke $(FN) --event $(EVENT) $(SAM_LOCAL_ARGS)

start-api: build ## sam local start-api on :3001 against the same emulator and simulator (needs Docker)
	$(BIN)/sam local start-api --port 3001 $(SAM_LOCAL_ARGS)

# REDRIVE_ARGS="--bucket B --queue-url Q --secret-id S [--ledger-table T] [--region R] [--dry-run]"
# names the resources (the local stack has no CloudFormation stack). `--stack $(STACK)` is added when
# REDRIVE_ARGS names none of the first three, or when STACK=.. is given; the stack gives its order
# ledger too, so a parked state the reconciler has recovered meanwhile is not sent again. boto3
# reads AWS_ENDPOINT_URL; the region defaults to ap-south-1.
REDRIVE_ARGS ?=
REDRIVE_NAMED := $(filter --stack% --bucket% --queue-url% --secret-id%,$(REDRIVE_ARGS))
REDRIVE_STACK := $(if $(filter command line,$(origin STACK))$(if $(REDRIVE_NAMED),,none),--stack $(STACK))

redrive: $(STAMP) ## re-send parked postbacks in receive order, verifying checksums, skipping states already delivered (STACK=.. or REDRIVE_ARGS=..)
	$(RUN) -m kitehooks.postbacks.redrive $(REDRIVE_STACK) $(REDRIVE_ARGS)

clean: ## remove build output and caches
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache

dev: $(STAMP) ## the whole stack locally: API :3000, AWS emulator :5000, Kite simulator :5100
	$(RUN) -m local.dev $(DEV_ARGS)

# The helpers below find the running `make dev` (its ports included) through .kitehooks-dev.json.
postback: $(STAMP) ## send a signed sample postback to the local stack (STATUS=.. ORDER_ID=..)
	@$(RUN) -m local.tools postback $(if $(STATUS),--status $(STATUS)) $(if $(ORDER_ID),--order-id $(ORDER_ID))

# ORDERS, SEED, DROP (share 0..1), DUPLICATES and FORGED shape the day; see local/kite_orders.py.
orders: $(STAMP) ## a scripted trading day at the local Kite simulator, postbacks to the local API (ORDERS= SEED= DROP= DUPLICATES= FORGED=)
	@$(RUN) -m local.kite_orders --orders $(or $(ORDERS),50) --seed $(or $(SEED),0) --drop-share $(or $(DROP),0) --duplicates $(or $(DUPLICATES),0) --forgeries $(or $(FORGED),0)

queue: $(STAMP) ## show the local order-update queue
	@$(RUN) -m local.tools queue

sessions: $(STAMP) ## show the local stack's stored sessions, without their tokens
	@$(RUN) -m local.tools sessions

# SessionFunction of the local stack, through Lambda's Invoke API on the local API's port: the same
# function code as deployed. USER counts only when given on the command line (the shell's $USER is
# the login name); without it, KITE_SIM_USER_ID or AB1234, the simulator's user.
SESSION_USER := $(if $(filter command line,$(origin USER)),$(USER),$(or $(KITE_SIM_USER_ID),AB1234))

logout: $(STAMP) ## end a local session at the Kite simulator and mark it revoked (USER=AB1234)
	@$(RUN) -m local.tools logout --user '$(SESSION_USER)'

session-status: $(STAMP) ## a local session's status, expires_at and login_time (USER=AB1234)
	@$(RUN) -m local.tools session-status --user '$(SESSION_USER)'

expire: $(STAMP) ## mark the local sessions past 06:00 IST expired, as the daily schedule does
	@$(RUN) -m local.tools expire

# ReconcilerFunction of the local stack, through the same Invoke API: one run, as the schedule makes.
reconcile: $(STAMP) ## reconcile the local sessions' orders with the Kite simulator's order book; prints the run's summary
	@$(RUN) -m local.tools reconcile
