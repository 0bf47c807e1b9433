# ironbus — the two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp

.PHONY: install deps demo test lint typecheck unit bench clean

# A fresh clone gets its virtualenv here; re-installs when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ironbus needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,tryton]'
	@touch $(STAMP)

install: $(STAMP)

# The protocol peers the tests start (sftp-server, Chromium, …): one idempotent script each in scripts/deps/.
deps:
	@for script in scripts/deps/*.sh; do [ -e "$$script" ] || continue; bash "$$script" || exit 1; done

demo: install
	$(PY) -m demo

lint: install
	$(VENV)/bin/ruff check bus adapters cli.py tests bench demo tryton

typecheck: install
	$(VENV)/bin/mypy

unit: install deps
	$(VENV)/bin/pytest -q --cov=bus --cov=adapters --cov-report=term:skip-covered

test: lint typecheck unit
	$(VENV)/bin/ironbus lint routes.yaml
	$(VENV)/bin/ironbus test tests/mappings

bench: install
	$(PY) bench/all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage var .cache
