# Everyday commands; `make help` lists them. The first `make train` or `make test` makes the venv (.venv) and installs
# the library (lib/) and the project into it (.ci/install); every target runs in that venv.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# The project's extras installed with it, e.g. EXTRAS=dev,plots,loggers (README "Tests": a missing one's tests skip)
EXTRAS ?= dev
# A torch to install before the rest, e.g. TORCH=torch==2.13.0; empty: what pip picks for the project (a CUDA build
# from PyPI on Linux, several GB)
TORCH ?=
# Overrides for `make train`, e.g. make train ARGS="model/net=cnn trainer.max_epochs=5"
ARGS ?=
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install hooks train test test-fast bench lint format clean clean-outputs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# Remade when pyproject.toml (or the library's: lib/, in the template) changes; a first use that stopped midway left
# no stamp, so it runs again.
$(INSTALLED): pyproject.toml $(wildcard lib/pyproject.toml)
	TORCH="$(TORCH)" bash .ci/install $(VENV) "$(EXTRAS)"

install: ## make the venv if needed and install the library and the project (EXTRAS=..., TORCH=...)
	TORCH="$(TORCH)" bash .ci/install $(VENV) "$(EXTRAS)"

hooks: $(INSTALLED) ## install the git pre-commit hooks: ruff, and notebook output stripping
	$(PYTHON) -m pip install pre-commit
	$(PYTHON) -m pre_commit install

train: $(INSTALLED) ## train with the default config (ARGS="..." for overrides)
	$(PYTHON) train.py $(ARGS)

test: $(INSTALLED) ## the whole test suite, slow tests included (what CI runs)
	$(PYTHON) -m pytest

test-fast: $(INSTALLED) ## the quick loop: every test not marked slow
	$(PYTHON) -m pytest -m "not slow"

# copier:template-only-start
bench: $(INSTALLED) ## the benchmark against a plain PyTorch loop (README "Performance"; ARGS="--quick" for a 40 s check)
	$(PYTHON) benchmarks/bench.py $(ARGS)
# copier:template-only-end

lint: $(INSTALLED) ## ruff lint and format check, no changes (what CI runs)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(INSTALLED) ## apply ruff's safe fixes and format the code and notebooks
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean: ## remove caches and build artifacts (run outputs and the venv stay: see clean-outputs)
	rm -rf build dist .pytest_cache .ruff_cache .coverage coverage.xml htmlcov lightning_logs
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name "*.egg-info" -o -name .ipynb_checkpoints \) \
		-type d -prune -exec rm -rf {} +

clean-outputs: ## delete every run dir under outputs/ (checkpoints included!)
	find outputs -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
