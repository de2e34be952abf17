# Two commands for a fresh machine: `make up` (install and start the cloud) and
# `make test` (install and run the whole suite, as CI does).
# The machines carry Python 3.12 and 3.13 under pyenv; elsewhere, have python3.12
# and python3.13 on PATH.
export PYENV_VERSION ?= 3.12.1:3.13.0
PYTHON ?= python3.12
VENV := .venv

.PHONY: up test lint clean

$(VENV)/installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]' 'tox>=4.11,<5'
	touch $@

up: $(VENV)/installed
	$(VENV)/bin/raftcloud up

test: $(VENV)/installed
	$(VENV)/bin/tox

lint: $(VENV)/installed
	$(VENV)/bin/tox -e lint

clean:
	rm -rf $(VENV) .tox var
