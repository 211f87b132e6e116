# Set-up and the two everyday jobs. Both create .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
D1 := $(VENV)/bin/d1
STAMP := $(VENV)/.installed

.PHONY: demo test test-mpi lint bench docs clean

# The [mpi] extra (mpi4py and the MPICH wheel) lets the suite run the emulator on MPI ranks
# (tests/test_mpi.py: 2 and 4 ranks against one process); where it cannot be installed, those
# tests skip.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,mpi]' || $(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m d1.demo

test: $(STAMP)
	$(PY) -m pytest

# only the MPI tests, with 2 ranks (D1_MPI_RANKS=2,4 adds 4)
test-mpi: $(STAMP)
	D1_MPI_RANKS=$${D1_MPI_RANKS:-2} $(PY) -m pytest tests/test_mpi.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP)
	$(D1) docs

bench: $(STAMP)
	$(D1) bench all

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
