# The two commands a newcomer needs: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama.cpp compiles from source. A portable x86-64 build (AVX2, no AVX-512/AMX): the native build of
# llama-cpp-python 0.3.36 segfaults in decode on this machine kind's AMX-capable Xeons.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX512=OFF

.PHONY: run test services browser install install-dev lint bench-cache bench-local bench-asgi clean

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

# The distributed-mode tests talk to a real Redis and PostgreSQL on 127.0.0.1; start them if they are down
# (this machine kind installs both; the commands are its documented start commands).
services:
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
		--save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	@pg_isready -h 127.0.0.1 -q || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 || ! test -x /usr/sbin/mariadbd || \
		start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
	@for i in $$(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -q && \
		{ ! test -x /usr/sbin/mariadbd || mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; } && exit 0; \
		sleep 1; done; echo "Redis, PostgreSQL or MariaDB did not come up on 127.0.0.1" >&2; exit 1

# The dashboard test drives Debian's chromium through playwright-core (pinned in tests/browser/package-lock.json).
tests/browser/node_modules/.package-lock.json: tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error

browser: tests/browser/node_modules/.package-lock.json
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Client SDK tests (tests/e2e/test_sdk_clients.py): the OpenAI JS SDK pinned in tests/clients-js/package-lock.json,
# and LlamaIndex in a venv of its own (its OpenAI integration pins openai<3; the Agents SDK in ours needs openai>=3).
CLIENTS_VENV := tests/clients-py/.venv
tests/clients-js/node_modules/.package-lock.json: tests/clients-js/package-lock.json
	cd tests/clients-js && npm ci --no-audit --no-fund --loglevel=error

$(CLIENTS_VENV)/.installed: tests/clients-py/requirements.txt
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet -r tests/clients-py/requirements.txt
	touch $@

.PHONY: clients
clients: tests/clients-js/node_modules/.package-lock.json $(CLIENTS_VENV)/.installed

test: install-dev services browser clients scale-tools
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

# Preference router: RouteLLM golden labels (MMLU/GSM8K) and PRD human ratings from ../shared/data (or $$PORTICO_DATA);
# MiniLM embeddings are cached under /work/cache/routing (or $$PORTICO_ROUTING_CACHE).
.PHONY: bench-routing
bench-routing: install-dev
	$(PY) bench/routing.py

# Portico vs LiteLLM proxy vs a bare aiohttp passthrough, behind the same nginx canned upstream. LiteLLM gets its
# own venv: its pins would fight ours. BENCH_ROUNDS / BENCH_SECONDS / BENCH_STREAMS shorten or lengthen the run.
LITELLM_VENV := bench/.venv-litellm
.PHONY: bench-gateway

$(LITELLM_VENV)/.installed:
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LITELLM_VENV)/bin/python -m pip install --quiet 'litellm[proxy]'
	touch $@

bench-gateway: install $(LITELLM_VENV)/.installed
	@command -v wrk >/dev/null && command -v nginx >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light)
	$(PY) bench/gateway.py

# Semantic cache vs GPTCache on Quora question pairs, plus exact-hit latency over HTTP (needs ../shared/data).
bench-cache: install-dev
	$(PY) bench/cache.py

# Cacheability (rules + classifier): held-out precision/recall, QQP flag rate, cost per query (QQP from ../shared/data).
.PHONY: bench-cacheability
bench-cacheability: install-dev
	OMP_NUM_THREADS=1 $(PY) bench/cacheability.py

# Knowledge-base retrieval (BM25 / vector / hybrid) vs bm25s, sentence-transformers and Haystack on BEIR SciFact and
# NFCorpus from ../shared/data/beir (or $$PORTICO_DATA); corpus embeddings cached under /work/cache/retrieval.
.PHONY: bench-retrieval
bench-retrieval: install-dev
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) bench/retrieval.py

# Guardrails: PII typed span F1 vs Presidio defaults, injection P/R/F1/FPR vs a MiniLM logistic regression,
# toxicity F1, input-set latency (needs ../shared/data or $$PORTICO_DATA; embeddings cached under /work/cache/guardrails).
.PHONY: bench-guardrails
bench-guardrails: install-dev
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) bench/guardrails.py

clean:
	rm -rf $(VENV) .portico .pytest_cache

# Write actions: prompt injections (../shared/data/injection) against an agent with write tools and an upstream that
# obeys them; two portico processes on one PostgreSQL; then 50 approvals decided through both at once.
.PHONY: bench-approvals
bench-approvals: install-dev services
	$(PY) bench/approvals.py

# Summarize small, then send big: SciFact claims over their cited abstracts, with and without the condense step
# (needs ../shared/data; a big model from PORTICO_BENCH_BIG_URL/_MODEL/_KEY, else the local model priced as one).
bench-condense: install-dev
	$(PY) bench/condense.py
.PHONY: bench-condense

# Questions over SQL: table/example retrieval, execution accuracy (local model, nearest-example baseline) on Kummerfeld's
# GeoQuery and Restaurants from ../shared/data/text2sql (or $$PORTICO_DATA), and the validator on bench/sql_attacks
# beside LangChain's SQLDatabase.run (langchain-community, a dev dependency).
.PHONY: bench-sql
bench-sql: install-dev
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) bench/sql.py

# Agents: Portico's agent step vs LangGraph's ReAct agent and the OpenAI Agents SDK on one scripted multi-step task
# (overhead per step, runs/s at 16 in flight), plus the local model's tool-call accuracy on bench/agent_tasks.jsonl.
.PHONY: bench-agents
bench-agents: install-dev
	$(PY) bench/agents.py

# Fuzzing: schemathesis over /openapi.json with many examples per operation (make test runs a bounded one);
# bench/results/fuzz.md ends with the `fuzz …` line make bench-scale reads. FUZZ_EXAMPLES sets the examples.
.PHONY: bench-fuzz
bench-fuzz: install-dev
	$(PY) bench/fuzz.py

# The flywheel: RouteLLM's MMLU replayed as a production stream (boolean feedback of the model that answered, a
# retrain + shadow gate every FLYWHEEL_K labels), the learning curve beside offline routers, an A/B test and the
# bandit's regret. Needs ../shared/data (or $$PORTICO_DATA); embeddings cached as for bench-routing.
.PHONY: bench-flywheel
bench-flywheel: install-dev
	$(PY) bench/flywheel.py

# The scale-out topology (tests/e2e/test_scale_topology.py, bench/scale.py) runs Debian's nginx-light in front of the
# replicas and wrk as the load generator.
.PHONY: scale-tools bench-scale
scale-tools:
	@command -v wrk >/dev/null && command -v nginx >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light)

# nginx → 2 replicas (--workers 2) → private Redis + PostgreSQL + llm-katan: scaling, shared limits and caches, faults
# (SIGKILL, rolling SIGTERM, Redis and PostgreSQL down 10 s, upstream brown-out) and a soak (SCALE_SOAK_SECONDS,
# default 1800; SCALE_SECONDS sets each phase's load).
bench-scale: install-dev scale-tools
	$(PY) bench/scale.py

# LLM judge validation: agreement of the pairwise judge with human labels (PRD Vicuna-80 and LFQA experts from
# ../shared/data/preference or $$PORTICO_DATA), MT-Bench-style, with position-swap consistency. The local model
# judges by default; JUDGE_BASE_URL/JUDGE_MODEL/JUDGE_API_KEY use any OpenAI-compatible model; JUDGES_N pairs.
.PHONY: bench-judges
bench-judges: install-dev
	$(PY) bench/judges.py
