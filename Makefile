# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing and install the locked dependencies once; a stamp file
# keyed on setup.py and requirements-lock.txt makes later runs skip the install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=

.PHONY: setup demo test test-all lint format bench clean

$(STAMP): setup.py requirements-lock.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "onesearch-jax needs Python 3.11 (jax 0.10.x); set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# PyTorch and transformers, for the tests and benchmarks that compare with HF T5 (not for demo).
$(TEST_STAMP): $(STAMP) requirements-test-lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-test-lock.txt
	@touch $(TEST_STAMP)

# The virtualenv alone (what launch/tpu_pod.sh and launch/gpu_slurm.sbatch use on each host); with
# JAX_EXTRA=tpu or cuda12, jax's accelerator build at the locked jax version is added.
JAX_EXTRA ?=
setup: $(STAMP)
ifneq ($(JAX_EXTRA),)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		"jax[$(JAX_EXTRA)]==$$(sed -n 's/^jax==//p' requirements-lock.txt)"
endif

# The whole pipeline on the default world, world to evaluation (onesearch_jax/pipeline/demo.py):
# stages whose outputs are up to date are skipped, an interrupted training run resumes.
demo: $(STAMP)
	$(BIN)/onesearch demo --output_dir=$(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

test-all: lint $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(BIN)/python bench/world_generation.py
	$(BIN)/python bench/sid_build.py
	$(BIN)/python bench/examples_throughput.py --examples=$(DEMO_DIR)/examples --vocab=$(DEMO_DIR)/sids/vocab
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
