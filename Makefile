# The two commands: `make run` serves the API on :4567, `make test` runs the whole suite.
# Both create .venv from the locked dependencies first; only Python 3.11+ and make are needed.
# `make run` installs only what the service needs; `make test` (and lint, format, lock) add the
# test and lint tools on top. `make bench` measures what the observability tools cost per request.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A stamp per lock: a changed lock reinstalls, an unchanged one costs nothing.
RUN_STAMP := $(VENV)/.installed-run-$(shell cksum < backend-flask/requirements.txt | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat backend-flask/requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: install install-dev run test lint format lock bench bench-quick clean

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

$(RUN_STAMP): backend-flask/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed; this is " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r backend-flask/requirements.txt
	rm -f $(VENV)/.installed-run-*
	touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(PIP) -r backend-flask/requirements.txt -r requirements-dev.txt
	rm -f $(VENV)/.installed-dev-*
	touch $(DEV_STAMP)

run: install
	cd backend-flask && exec ../$(BIN)/gunicorn app:app

test: install-dev
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Recompile both locks from the .in files after changing a dependency.
lock: install-dev
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file backend-flask/requirements.txt backend-flask/requirements.in
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements-dev.txt requirements-dev.in

# The full run, about 7 minutes on 2 cores, rewrites docs/benchmarks.md. `make bench-quick` is a
# look in under a minute that prints its numbers and writes nothing. Both use wrk when installed.
bench: install
	$(BIN)/python -m bench --write

bench-quick: install
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) backend-flask/instance .pytest_cache .hypothesis
