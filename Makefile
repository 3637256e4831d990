# The two commands: `make run` serves the API on :4567, `make test` runs the whole suite.
# Both create .venv and install the locked dependencies first; only Python 3.11+ and make are needed.
# `make bench` measures what the observability tools cost per request and writes docs/benchmarks.md.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat backend-flask/requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: install run test lint format lock bench clean

install: $(STAMP)

$(STAMP): backend-flask/requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed; this is " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r backend-flask/requirements.txt -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: install
	cd backend-flask && exec ../$(BIN)/gunicorn app:app

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Recompile both locks from the .in files after changing a dependency.
lock: install
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file backend-flask/requirements.txt backend-flask/requirements.in
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements-dev.txt requirements-dev.in

# About 7 minutes on 2 cores; uses wrk when it is installed. Quick look: BENCH_SECONDS=2 BENCH_ROUNDS=1 make bench
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) backend-flask/instance .pytest_cache .hypothesis
