# gsweep — `make sweep` installs everything and runs the main sweep; `make test` runs the tests.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# sweeps/default.yaml where an accelerator is present, sweeps/quick.yaml on a CPU-only machine.
SWEEP   ?= $(shell $(BIN)/python -c "import jax,sys; sys.stdout.write('sweeps/default.yaml' if jax.default_backend() != 'cpu' else 'sweeps/quick.yaml')" 2>/dev/null || echo sweeps/quick.yaml)
ARGS    ?=

.PHONY: install sweep test lint bench plots clean help

help:
	@echo "make sweep   install (.venv) and run the sweep (SWEEP=sweeps/x.yaml ARGS='--set train.steps=200')"
	@echo "make test    install (.venv) and run the test suite"
	@echo "make lint    ruff"
	@echo "make bench   throughput against the PyTorch peers (installs the [bench] extra)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

sweep: $(STAMP)
	$(BIN)/python -m gsweep run $(SWEEP) $(ARGS)
	$(BIN)/python -m gsweep plot phase-diagram results/$$($(BIN)/python -c "import yaml,sys; print(yaml.safe_load(open('$(SWEEP)'))['name'])")
	$(BIN)/python -m gsweep report results/$$($(BIN)/python -c "import yaml,sys; print(yaml.safe_load(open('$(SWEEP)'))['name'])")

test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	    echo "make test: chromium could not be installed here; the report's browser test will be skipped"; }
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m gsweep bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
