# Quick start (see README.md):  `make run`  sets up and runs the whole default pipeline;
#                               `make test` sets up and runs the fast tests (`make test-all`: all).
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= 2
BIN    := $(VENV)/bin
# DVC stages call `snakemake`; MLflow/DVC telemetry off for every command.
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup run data test test-all docs lint dryrun status ui clean-results smoke audit

setup: $(VENV)/.installed

# torch first, pinned: a bare `torch>=2.2` in a fresh venv pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,slurm,deploy,docs,team]'
	touch $@

# The built-in data, deterministic: its hash is the one pinned in data.dvc.
data: setup
	$(BIN)/snakemake --cores $(CORES) builtin_data
	@if $(BIN)/dvc status data.dvc | grep -q modified; then \
	  echo "error: data/ differs from data.dvc (generator or data.* parameters changed?)" >&2; exit 1; fi

run: data
	# The workflow's onsuccess handler records the lineage (dvc commit), so `dvc status` is up to date.
	$(BIN)/snakemake --cores $(CORES)

# The ranking audit of the run (docs/audit.md): stand-alone trainings vs the supernet's ranking;
# runs the default pipeline first where it is not up to date.
audit: data
	$(BIN)/snakemake --cores $(CORES) audit_all

# Paper-shape smoke runs (params/smoke_*.yaml: W32, 512x1024 crops, 1024x2048 evaluation, 256x192
# pose input; a few iterations and candidates), each in its own directory results-smoke/<name>/.
SMOKES ?= cityscapes_w32 coco_w32_256x192
smoke: setup
	@for s in $(SMOKES); do \
	  echo "== smoke $$s"; \
	  $(BIN)/snakemake -s Snakefile -d results-smoke/$$s --cores $(CORES) \
	    --config params=$(abspath params)/smoke_$$s.yaml || exit 1; \
	done

# The fast tier: everything but the end-to-end tests marked slow (the tiny pipeline run, SLURM,
# torchrun, the browser). `make test-all` (and CI) runs everything.
test: setup
	$(BIN)/pytest -q -m "not slow"

test-all: setup
	$(BIN)/pytest -q

# The documentation site in site/ (a broken link or anchor fails the build).
docs: setup
	$(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/snakemake --lint

dryrun: setup
	$(BIN)/snakemake -n --cores $(CORES)

status: setup
	$(BIN)/snakemake -n --cores $(CORES) --quiet rules
	$(BIN)/dvc status

# MLflow UI on loopback only (http://127.0.0.1:5000); first the link to the candidates' runs.
ui: setup
	-@$(BIN)/python -m pipeline.tracking link
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server \
	  --backend-store-uri sqlite:///$(abspath results/mlflow.db) \
	  --host 127.0.0.1 --port 5000 --workers 1

clean-results:
	rm -rf results results-smoke .snakemake dvc.lock
