# gsweep — `make sweep` installs what the sweep needs and runs it; `make test` runs the tests.
# The host decides JAX's build: an NVIDIA GPU (nvidia-smi works) gets the [cuda] extra, ACCEL=tpu the
# [tpu] extra, ACCEL=cpu (or no GPU) the CPU build. torch comes only with `make test` / `make bench`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
ACCEL   ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
EXTRA   := $(if $(filter cuda tpu,$(ACCEL)),$(ACCEL),)
STAMP   := $(VENV)/.installed-$(ACCEL)
DEVSTAMP := $(VENV)/.installed-dev
# sweeps/default.yaml on an accelerator host, sweeps/quick.yaml on a CPU-only one.
SWEEP   ?= $(if $(EXTRA),sweeps/default.yaml,sweeps/quick.yaml)
ARGS    ?=
# the sweep's results dir is results/<its name:> (read without starting Python)
NAME    := $(shell sed -n 's/^name:[[:space:]]*\([^[:space:]#]*\).*/\1/p' $(SWEEP) | head -1)

.PHONY: install sweep test lint bench plots clean help

help:
	@echo "make sweep   install (.venv, JAX for this host: ACCEL=$(ACCEL)) and run $(SWEEP) (SWEEP=... ARGS='--set train.steps=200')"
	@echo "make test    install the dev extra (pytest, torch) and run the test suite"
	@echo "make lint    ruff"
	@echo "make bench   throughput against gsweep's PyTorch peer (installs the [bench] extra)"
	@echo "ACCEL=cpu|cuda|tpu overrides the detection"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.$(if $(EXTRA),[$(EXTRA)],)'
	touch $(STAMP)

$(DEVSTAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev$(if $(EXTRA),$(comma)$(EXTRA),)]'
	touch $(DEVSTAMP)

comma := ,

install: $(STAMP)

sweep: $(STAMP)
	$(BIN)/python -m gsweep run $(SWEEP) $(ARGS)
	$(BIN)/python -m gsweep plot phase-diagram results/$(NAME)
	$(BIN)/python -m gsweep report results/$(NAME)

test: $(DEVSTAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	    echo "make test: chromium could not be installed here; the report's browser test will be skipped"; }
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(DEVSTAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench$(if $(EXTRA),$(comma)$(EXTRA),)]'
	$(BIN)/python -m gsweep bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
