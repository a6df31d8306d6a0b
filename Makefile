# hwnorm: `make sim` and `make test` are all a fresh clone needs (they create .venv on first use).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hwnorm-installed
JOBS   ?= auto

.PHONY: install sim soak test lint verilog golden numerics docs bench accuracy synth report clean distclean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,report,explore]'
	touch $(STAMP)

install: $(STAMP)

## cocotb regression of every datapath in Verilator; FULL=1 runs the full matrix
sim: $(STAMP)
	$(VENV)/bin/hwnorm sim $(if $(FULL),--full)

## soak: 10M values through random configurations, Verilated model vs golden model bit for bit, plus the
## cocotb testbench with random stalls and resets on some of them (SEED=, CONFIGS= to vary; < 10 min)
SOAK_VALUES ?= 10000000
soak: $(STAMP)
	$(VENV)/bin/hwnorm sim --soak $(SOAK_VALUES) --seed $(or $(SEED),1) $(if $(CONFIGS),--soak-configs $(CONFIGS))

## the fast tier (<= 6 min on a fresh clone): unit, golden, rtl staleness, the hook, and one cocotb build per block
## and optional stage (every kind's whole matrix is make sim's); in parallel, a module's marked tests on one worker
test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup -q

## ruff check (the configuration in pyproject.toml); tests/test_lint.py runs it too
lint: $(STAMP)
	$(PY) -m ruff check .

## regenerate rtl/ from the generators
verilog: $(STAMP)
	$(VENV)/bin/hwnorm verilog

## regenerate the frozen vectors in golden/ (only when the specification changes on purpose)
golden: $(STAMP)
	$(VENV)/bin/hwnorm golden

## values/s through the golden model (beside torch's nn.BatchNorm2d), the rtl backend, cocotb and raw Verilator, with ratios
bench: $(STAMP)
	$(VENV)/bin/hwnorm bench

## every norm kind trained with its norms on the golden model (digits, MNIST-1D; 8 and 16 bits); FULL=1: the
## whole sweep (4-16 bits, 3 seeds, narrow-float statistics) on hwnorm explore's engine, and docs/results.md;
## cached under build/accuracy/
accuracy: $(STAMP)
	$(VENV)/bin/hwnorm accuracy $(if $(FULL),--full --write --engine auto)

## synthesis of every kind x width x lanes: ECP5 (main target, nextpnr-ecp5 Fmax), iCE40, generic gates (PyPI tools; cached);
## on hwnorm explore's engine (local Ray, one CPU per configuration; sequential without ray)
synth: $(STAMP)
	$(VENV)/bin/hwnorm synth --engine auto

## docs/results.md and docs/img/: synthesis, numeric error, latency, speed, accuracy
report: $(STAMP)
	$(VENV)/bin/hwnorm report

## regenerate the tables in docs/ (numeric error, passes and latency)
docs: $(STAMP)
	$(VENV)/bin/hwnorm tables --write

numerics: $(STAMP)
	$(VENV)/bin/hwnorm numerics --write

clean:
	rm -rf build .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info
