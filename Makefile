# Two commands set everything up on a fresh clone:
#   make demo   install, start a local Prefect server and worker, run a remediation sweep on Adult up to review
#   make test   install, run the test suite (what CI runs through .ci/run)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1

.PHONY: demo test install browser postgresql lock

install: $(VENV)/.installed

# Every dependency comes from requirements.lock (exact versions and hashes), so both commands
# build the same stack on every clone. Refresh it after changing pyproject.toml with `make lock`.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock  # the lock lists every dependency
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

lock:
	$(PYTHON) -m pip install --quiet uv
	$(PYTHON) -m uv pip compile pyproject.toml --extra test --extra lightgbm --extra adversarial --extra dask \
	    --find-links /opt/wheels --python-version 3.11 --generate-hashes --quiet --output-file requirements.lock

demo: install
	$(BIN)/fairloop remediate --dataset datasets/adult.yaml --sweep constraints/sweeps/default.yaml --until-review

# tests/test_review_ui.py drives the Prefect UI in Debian's chromium (through the playwright
# package; never `playwright install`, which downloads a browser build of its own).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# tests/test_postgres_server.py runs the Prefect server on a throw-away PostgreSQL (Debian's
# package: initdb and pg_ctl from /usr/lib/postgresql/*/bin, run as its postgres user).
postgresql:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# pytest exits 5 when it collected no test: make treats that as a failure, as it should.
test: install browser postgresql
	$(BIN)/python -m pytest
