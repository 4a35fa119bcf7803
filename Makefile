# The two commands a newcomer needs: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama.cpp compiles from source. A portable x86-64 build (AVX2, no AVX-512/AMX): the native build of
# llama-cpp-python 0.3.36 segfaults in decode on this machine kind's AMX-capable Xeons.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX512=OFF

.PHONY: run test install install-dev lint bench-local bench-asgi clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: this exact version is the CPU build on the machine's disk; a bare `torch`
# requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/portico serve

test: install-dev
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check src tests

bench-local: install-dev
	$(PY) bench/local_throughput.py

# Needs Debian's nginx-light (canned upstream) and wrk (load generator).
bench-asgi: install-dev
	@command -v wrk >/dev/null && command -v nginx >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light)
	$(PY) bench/asgi_server.py

clean:
	rm -rf $(VENV) .portico .pytest_cache
