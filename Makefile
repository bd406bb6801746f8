# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DEMO_SECONDS ?= 20

.PHONY: run test install install-dev peers lint kafka-start kafka-stop bench clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/activate pyproject.toml
	$(PIP) install -q -e '.[embedded]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/bin/activate pyproject.toml
	$(PIP) install -q -e '.[embedded,dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make run: install and run the demo on the embedded default (in-process bus, chDB)
run: install
	$(VENV)/bin/dnsflow demo --seconds $(DEMO_SECONDS)

## make test: install, start the local Kafka, run the whole suite, stop what was started
test: install-dev peers
	@bash scripts/run-tests

## DNS peers used by integration tests and benchmarks (Debian packages)
peers:
	@bash scripts/install-peers

lint: install-dev
	$(VENV)/bin/ruff check .

kafka-start:
	@bash scripts/kafka-local start

kafka-stop:
	@bash scripts/kafka-local stop

clean:
	rm -rf .dnsflow .pytest_cache
