# make run   - dev server: venv, embedded PostgreSQL, migrations, gunicorn on 127.0.0.1:8000, a cron tick a minute
# make demo  - the same, with sample jobs enqueued
# make test  - venv, embedded PostgreSQL, the whole pytest suite (CI runs this)
# make chaos - the long fault-injection runs (see docs/RELIABILITY.md)
# make bench - the benchmarks (see docs/BENCHMARKS.md)
# make schema - regenerate sql/schema.sql (the whole schema in one file) from a freshly migrated database
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv run demo test chaos db-start db-stop bench schema clean

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,test]'
	touch $(STAMP)

venv: $(STAMP)

run: venv
	bash scripts/run.sh

demo: venv
	DEMO=1 bash scripts/run.sh

test: venv
	bash scripts/test.sh $(PYTEST_ARGS)

chaos: venv
	CHAOS_ARGS="$(CHAOS_ARGS)" LOAD_ARGS="$(LOAD_ARGS)" bash scripts/chaos.sh

db-start: venv
	$(PY) -m jobprocessor.devdb start jobprocessor

db-stop: venv
	$(PY) -m jobprocessor.devdb stop

bench: venv
	bash scripts/bench.sh

schema: venv
	$(PY) -m jobprocessor.schema_dump

clean:
	-$(PY) -m jobprocessor.devdb stop
	rm -rf $(VENV) .pgdata *.egg-info
