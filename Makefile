# Set-up is part of every target: a fresh clone needs only `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PROMPT ?= a red fox running through fresh snow, golden hour
BIN := $(VENV)/bin
STAMP := $(VENV)/.mora-installed
# Offline machines: no Prefect telemetry from the temporary servers the demo and tests start.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[test,browser,cluster]'
	touch $(STAMP)

setup: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/mora models build-tiny

demo: setup
	mkdir -p out
	HF_HUB_OFFLINE=1 $(BIN)/mora t2v "$(PROMPT)" --segments 2 --out out/t2v-demo.mp4

# Three pytest-xdist workers on 2 cores: the integration tests wait on servers and subprocesses
# much of the time (benchmarks/README.md, "The test suite"); tests that share a module-scoped
# server carry an xdist_group mark. WORKERS=0 runs the suite serially.
WORKERS ?= 3
PYTEST := $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadgroup

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not integration"

bench: setup
	$(BIN)/python benchmarks/bench_t2v_overhead.py

clean:
	rm -rf $(VENV) out mora-store
