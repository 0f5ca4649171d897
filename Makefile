# Two commands on a fresh machine: `make demo` runs blockhub, `make test` runs the checks.
# Each creates the virtual environment and installs the project first (pinned by constraints.txt).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser daft faketime demo tour serve test quick e2e lint typecheck pytest \
	pytest-elsewhen test-pg pytest-pg clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,engines]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/blockhub demo

tour: $(STAMP)
	$(BIN)/blockhub demo --tour

serve: $(STAMP)
	$(BIN)/blockhub serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The dashboard tests drive Debian's Chromium (Playwright's own browser download cannot work here).
browser:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# Daft reads the lake from its own environment: Daft 0.7 needs pyarrow<26, the hub pins 26
# (docs/operations.md, "Other engines"; tests/test_engines.py runs it on a local Ray cluster).
DAFT_VENV := .venv-daft
DAFT_REQS := docs/examples/engines/daft-requirements.txt
$(DAFT_VENV)/.installed: $(DAFT_REQS)
	$(PYTHON) -m venv $(DAFT_VENV)
	$(DAFT_VENV)/bin/pip install --quiet --upgrade pip
	$(DAFT_VENV)/bin/pip install --quiet --no-deps -r $(DAFT_REQS)
	touch $@

daft: $(DAFT_VENV)/.installed

pytest: $(STAMP) browser daft
	$(BIN)/pytest

# The date, weekday and zone must not matter: tests inject their clock and zone. This runs
# the tests of dates, deadlines and identifiers again on another day in another zone —
# Tuesday 29 February 2028, one minute to midnight UTC (already 1 March in Beijing and on
# Kiritimati, UTC+14), a year the holiday calendar does not cover — under libfaketime,
# whose time is read in the process's zone: 13:59 on 1 March in Kiritimati is 23:59 UTC.
ELSEWHEN_TESTS = tests/test_workdays.py tests/test_grants.py tests/test_identifiers.py \
	tests/test_identifier_sql.py tests/test_masking.py tests/test_sampleworld.py \
	tests/test_quality_gx.py tests/test_alert_rules.py tests/test_zones.py
faketime:
	@command -v faketime >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q faketime; }

pytest-elsewhen: $(STAMP) faketime
	TZ=Pacific/Kiritimati faketime -f '@2028-03-01 13:59:00' \
		$(BIN)/pytest -q -p no:cacheprovider $(ELSEWHEN_TESTS)

test: lint typecheck pytest pytest-elsewhen pytest-pg

# The hub's own state on PostgreSQL instead of the embedded SQLite files: every test hub
# (the `settings`/`hub` fixtures) gets a fresh database of 127.0.0.1:5432 for its catalog,
# Iceberg catalog and event log (tests/conftest.py `hub_settings`). `make test` runs the
# REST API's and the audit chain's tests this way (PG_TESTS); `make test-pg` runs the whole
# suite (docs/operations.md, "Deploy on PostgreSQL"; the migration and backup tests make
# their own PostgreSQL databases in every run).
PG_TESTS = tests/test_api.py tests/test_audit.py
pytest-pg: $(STAMP) browser
	BLOCKHUB_TEST_CATALOG=pg $(BIN)/pytest -q -p no:cacheprovider $(PG_TESTS)

test-pg: $(STAMP) browser
	BLOCKHUB_TEST_CATALOG=pg $(BIN)/pytest -q -p no:cacheprovider -m "not load and not contract"

# The inner loop: lint and a fast subset (~2 min). `make test` (and CI) runs everything,
# the load test (marker load) and the OpenAPI fuzzing (marker contract) included.
QUICK_TESTS := tests/test_layering.py tests/test_sqlcheck.py tests/test_identifiers.py \
	tests/test_manifest.py tests/test_rows.py tests/test_json_encoder.py \
	tests/test_rate_limits.py tests/test_api.py
quick: lint
	$(BIN)/pytest -q -x -m "not load and not contract" $(QUICK_TESTS)

# The production topology as processes (replicas behind the proxy, PostgreSQL, Redis, MQTT):
# part of `make test`; alone here (~2 min).
e2e: $(STAMP)
	$(BIN)/pytest -q -m e2e

clean:
	rm -rf $(VENV) $(DAFT_VENV) blockhub-data .pytest_cache .mypy_cache .ruff_cache
