# Two commands set everything up on a fresh clone:
#   make demo   install, start a local Prefect server, run a remediation sweep on Adult up to review
#   make test   install, run the test suite (what CI runs through .ci/run)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1

.PHONY: demo test install browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/fairloop remediate --dataset datasets/adult.yaml --sweep constraints/sweeps/default.yaml --no-wait

# tests/test_review_ui.py drives the Prefect UI in Debian's chromium (through the playwright
# package; never `playwright install`, which downloads a browser build of its own).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# pytest exits 5 when it collected no test: make treats that as a failure, as it should.
test: install browser
	$(BIN)/python -m pytest
