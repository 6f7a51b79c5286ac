# `make test` and `make bench` create .venv when missing, install the project with the
# tested pins in constraints.txt, then run. PYTHON picks the interpreter for the venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.iclrbench-installed
PRESET ?= quick
ARGS   ?=

.PHONY: install test bench smoke paper-csv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all,test]'
	@touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/iclrbench run --preset $(PRESET) $(ARGS)

smoke: install
	$(VENV)/bin/iclrbench run --preset smoke $(ARGS)

paper-csv: install
	$(VENV)/bin/iclrbench paper-csv

clean:
	rm -rf $(VENV) .pytest_cache
