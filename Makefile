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

.PHONY: install sweep test lint bench bench-cores plots clean help

help:
	@echo "make sweep   install (.venv, JAX for this host: ACCEL=$(ACCEL)) and run $(SWEEP) (SWEEP=... ARGS='--set train.steps=200')"
	@echo "make test    install the dev extra (pytest, torch) and run the test suite"
	@echo "make lint    ruff"
	@echo "make bench   throughput against gsweep's PyTorch peer (installs the [bench] extra)"
	@echo "make bench-cores  quick.yaml's throughput on one CPU device and on one per core, in one run"
	@echo "ACCEL=cpu|cuda|tpu overrides the detection"

# The install: the current pip (python3 -m venv brings an older one, which took ~15 s longer for the
# same packages, measured on a 2-core CPU); no bytecode for all ~7,800 files of the dependencies
# (~40 s), scripts/precompile.py writes it for the ~1,600 modules a sweep loads.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e '.$(if $(EXTRA),[$(EXTRA)],)'
	$(BIN)/python scripts/precompile.py
	touch $(STAMP)

$(DEVSTAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev$(if $(EXTRA),$(comma)$(EXTRA),)]'
	touch $(DEVSTAMP)

comma := ,

install: $(STAMP)

# One process: the sweep, then its phase diagram and report.html in its results dir (as `gsweep plot
# phase-diagram DIR` and `gsweep report DIR` would; --out in ARGS moves all three).
sweep: $(STAMP)
	$(BIN)/python -m gsweep run $(SWEEP) --phase-diagram --report $(ARGS)

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

# On CPU every gsweep command runs on one XLA device per usable core (GSWEEP_CPU_DEVICES=N overrides).
bench-cores: $(STAMP)
	$(BIN)/python scripts/cpu_devices_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
