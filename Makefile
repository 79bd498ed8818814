# Two commands on a fresh machine with Python 3.11:  make demo   and   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo lint test test-slow bench clean

install: $(STAMP)

# torch first, exactly this spec: it is a CPU wheel on local disk; any other spec pulls CUDA.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# trains MAML, FOMAML, Reptile and the baselines on point-nav, evaluates, prints one table
demo: install
	$(BIN)/python -m adaptrl.demo --out runs/demo

lint: install
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/adaptrl bench sampler cheetah-vel --tasks 40 --episodes 20
	$(BIN)/adaptrl bench meta-step point-nav --preset nav
	$(BIN)/adaptrl bench meta-step cheetah-vel --preset locomotion-h100
	$(BIN)/adaptrl bench adapt cheetah-vel --algos flap,pearl,maml

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
