# ironbus — the two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
# One pytest worker per core plus one (at least 3): the live tests spend much of their time waiting on Tryton and
# on the bus processes they start, so a third worker on two cores took the suite from 9:03 (2 workers, no coverage)
# to 7:35 (3 workers, with coverage); a fourth gained 40 s more but ran the machine at load 10.
# Each test file runs whole in one worker (--dist loadfile), so a module's Tryton stack or protocol peer starts once.
TEST_WORKERS ?= $(shell python3 -c 'import os; print(max(3, len(os.sched_getaffinity(0)) + 1))')

.PHONY: install deps demo demo-b2b test lint typecheck unit bench clean
.PHONY: demo-up demo-down

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

# The triangle with its suppliers on B2B standards (examples/suppliers): a delay arriving by EDI X12 and by cXML.
demo-b2b: install
	$(PY) -m demo.b2b

# The demo's Tryton kept running on :8765 (the URL routes.yaml uses) with its master data linked, to play with
# `ironbus run` on the shipped routes; demo-down stops it.
demo-up: install
	$(PY) -m demo.up start

demo-down: install
	$(PY) -m demo.up stop

lint: install
	$(VENV)/bin/ruff check bus adapters cli.py tests bench demo tryton

typecheck: install
	$(VENV)/bin/mypy

unit: install deps
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --cov=bus --cov=adapters --cov-report=term:skip-covered

test: lint typecheck unit
	$(VENV)/bin/ironbus lint routes.yaml
	$(VENV)/bin/ironbus test tests/mappings

bench: install
	$(PY) bench/all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage var .cache
