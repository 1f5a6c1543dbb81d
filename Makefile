# The two commands a fresh machine needs (see README): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test setup serve

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

## Install into .venv and start the dashboard on http://localhost:8501 (the demo model unless one is set).
run: setup
	$(PY) -m streamlit run dashboard/app.py --server.port 8501

## Install into .venv and run the whole test suite.
test: setup
	$(PY) -m pytest

## Start the OpenAI-compatible API server.
serve: setup
	$(PY) -m core serve
