# Two commands on a fresh machine (Debian 12, root or sudo-less CI):
#   make demo   a real JupyterHub spawning Jupyter servers on a "remote" host over SSH tunnels
#   make test   the test suite against real components
# and `make docs` builds the documentation into docs/_build/html (nitpicky, warnings are errors),
# `make lint` checks the code with ruff (lint rules and formatting, [tool.ruff] in pyproject.toml).
# Each does its own set-up: system packages, the node proxy, a virtualenv.

PYTHON ?= python3
VENV ?= .venv
JUPYTERHUB ?= jupyterhub>=6.1,<7
PYTEST_ARGS ?=
# the original package (PyPI jupyterhub-forwardbasespawner 2.1.2) on the same JupyterHub, for the
# upgrade-in-place tests (tests/compat/test_upgrade.py): a Hub that ran it restarts on ours
ORIGINAL_VENV ?= $(VENV)-original

BIN := $(VENV)/bin
CHP := node_modules/.bin/configurable-http-proxy

.PHONY: test test-jupyterhub-5 lint demo docs system-deps system-deps-test system-deps-docs clean

system-deps:
	@./.ci/system-deps

system-deps-test:
	@./.ci/system-deps test

system-deps-docs:
	@./.ci/system-deps docs

$(BIN)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]' '$(JUPYTERHUB)'
	touch $@

$(ORIGINAL_VENV)/bin/.installed: | system-deps
	$(PYTHON) -m venv $(ORIGINAL_VENV)
	$(ORIGINAL_VENV)/bin/pip install --quiet --upgrade pip
	$(ORIGINAL_VENV)/bin/pip install --quiet 'jupyterhub-forwardbasespawner==2.1.2' '$(JUPYTERHUB)'
	touch $@

$(CHP): package.json | system-deps
	npm install --no-audit --no-fund --loglevel=error
	touch $@

test: system-deps-test $(BIN)/.installed $(ORIGINAL_VENV)/bin/.installed $(CHP)
	FBS_ORIGINAL_VENV=$(ORIGINAL_VENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

# `$(BIN)/ruff check --fix .` and `$(BIN)/ruff format .` fix what they can
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the same suite against the oldest JupyterHub we support
test-jupyterhub-5:
	$(MAKE) test VENV=.venv-jupyterhub-5 JUPYTERHUB='jupyterhub>=5.4,<5.5'

$(BIN)/.installed-docs: pyproject.toml $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $@

docs: system-deps-docs $(BIN)/.installed-docs
	rm -rf docs/_build/html
	$(BIN)/sphinx-build -n -W --keep-going -b html docs/source docs/_build/html

# As root (a fresh machine, a container) the demo's servers would run as root: it refuses that
# unless asked, and `make demo` asks for it there, saying so.
DEMO_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

demo: $(BIN)/.installed $(CHP)
	$(BIN)/python -m forwardbasespawner.demo $(DEMO_ARGS)

clean:
	rm -rf .venv .venv-original .venv-jupyterhub-5 .venv-jupyterhub-5-original node_modules
