# Set-up and the two everyday jobs. Both create .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
D1 := $(VENV)/bin/d1
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m d1.demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP)
	$(D1) docs

bench: $(STAMP)
	$(D1) bench all

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
