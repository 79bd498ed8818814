# Two commands on a fresh machine with Python 3.11:  make demo   and   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install install-metaworld demo lint test test-metaworld test-slow bench clean

install: $(STAMP)

# torch first, exactly this spec: it is a CPU wheel on local disk; any other spec pulls CUDA.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

# trains MAML, FOMAML, Reptile and the baselines on point-nav, evaluates, prints one table
demo: install
	$(BIN)/python -m adaptrl.demo --out runs/demo

lint: install
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

# Meta-World pins mujoco==3.3.0, so it gets its own virtualenv; this target runs the Meta-World
# tests and the MuJoCo family tests there, on mujoco 3.3.0 (the default .venv has mujoco 4.x).
MW_VENV  := .venv-mw
MW_BIN   := $(MW_VENV)/bin
MW_STAMP := $(MW_VENV)/.installed
MW_TESTS := tests/test_metaworld.py tests/test_envs.py tests/test_gym_views.py tests/test_gym_vector.py \
            tests/test_sampling.py tests/test_unchanged_numbers.py

install-metaworld: $(MW_STAMP)

$(MW_STAMP): pyproject.toml
	test -x $(MW_BIN)/python || $(PYTHON) -m venv $(MW_VENV)
	$(MW_BIN)/python -m pip install --quiet --upgrade pip
	$(MW_BIN)/python -m pip install --quiet torch==2.13.0
	$(MW_BIN)/python -m pip install --quiet -e '.[dev,metaworld]'
	touch $(MW_STAMP)

test-metaworld: $(MW_STAMP)
	$(MW_BIN)/python -c "from importlib.metadata import version; print('metaworld', version('metaworld'), 'mujoco', version('mujoco'))"
	$(MW_BIN)/python -m pytest -q $(MW_TESTS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/adaptrl bench sampler cheetah-vel --tasks 40 --episodes 20
	$(BIN)/adaptrl bench meta-step point-nav --preset nav
	$(BIN)/adaptrl bench meta-step cheetah-vel --preset locomotion-h100
	$(BIN)/adaptrl bench adapt cheetah-vel --algos flap,pearl,maml

clean:
	rm -rf $(VENV) $(MW_VENV) build src/*.egg-info .pytest_cache
