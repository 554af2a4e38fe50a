# Everyday commands; `make help` lists them. Run them inside your virtualenv.
PYTHON ?= python
# The optional extras `make install` adds to the dev tools; e.g. make install EXTRAS=dev
EXTRAS ?= dev,plots,notebooks,loggers,onnx
# Overrides for `make train`, e.g. make train ARGS="model/net=cnn trainer.max_epochs=5"
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install hooks train test test-fast bench lint format clean clean-outputs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: ## install the project (editable) with the dev tools and extras (EXTRAS=...)
	$(PYTHON) -m pip install -e ./lib -e ".[$(EXTRAS)]"

hooks: ## install the git pre-commit hooks: ruff, and notebook output stripping
	$(PYTHON) -m pip install pre-commit
	$(PYTHON) -m pre_commit install

train: ## train with the default config (ARGS="..." for overrides)
	$(PYTHON) train.py $(ARGS)

test: ## the whole test suite, slow tests included (what CI runs)
	$(PYTHON) -m pytest

test-fast: ## the quick loop: every test not marked slow
	$(PYTHON) -m pytest -m "not slow"

bench: ## the benchmark against a plain PyTorch loop (README "Performance"; ARGS="--quick" for a 40 s check)
	$(PYTHON) benchmarks/bench.py $(ARGS)

lint: ## ruff lint and format check, no changes (what CI runs)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: ## apply ruff's safe fixes and format the code and notebooks
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean: ## remove caches and build artifacts (run outputs stay: see clean-outputs)
	rm -rf build dist .pytest_cache .ruff_cache .coverage coverage.xml htmlcov lightning_logs
	find . -path ./.venv -prune -o \( -name __pycache__ -o -name "*.egg-info" -o -name .ipynb_checkpoints \) \
		-type d -prune -exec rm -rf {} +

clean-outputs: ## delete every run dir under outputs/ (checkpoints included!)
	find outputs -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
