# keras-vit: the few verbs people type. `make test` and `make demo` set everything up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CHROMIUM ?= /usr/bin/chromium

include Makefile.deploy

.PHONY: install test test-fast demo lint format bench fuzz clean protos

# pytest-xdist workers for `make test` / `make test-fast` (TEST_WORKERS=0: one process).
# loadgroup keeps the tests of one xdist_group on one worker.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

install: $(STAMP)

$(STAMP): setup.py requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

## make test: create .venv (and checkov's own .venv-checkov) if absent, install, lint,
## run the whole test suite (on TEST_WORKERS processes; the 15 slowest tests are listed).
test: install $(CHECKOV_VENV)/bin/checkov $(CHROMIUM)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests $(XDIST) --durations=15 $(PYTEST_ARGS)

## make test-fast: lint and the tests not marked slow (a few minutes; `make test` runs all).
test-fast: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests $(XDIST) -m "not slow" --durations=15 $(PYTEST_ARGS)

# The UI test drives Debian's chromium with Playwright (Playwright's own browser
# downloads are not reachable from CI). Installed with apt-get when missing (CI runs as root).
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

## make demo: the main job on the embedded default (MODEL=<hub id or path> for real weights).
demo: install
	$(PY) -m keras_vit.demo $(if $(MODEL),--model $(MODEL),)

## make fuzz: the property-based fuzzing of REST bodies and TensorProtos, 2000 examples each.
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/serving/test_fuzz.py $(PYTEST_ARGS)

## make lint: ruff, and import-linter's layer contracts (pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## make protos: recompile serving/protos/*.proto into serving/protos/descriptor_set.py.
protos: install
	$(PY) -m serving.protos.build

## make bench: the benchmarks; each writes benchmarks/results/<name>.md.
bench: install
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	$(PY) -m benchmarks.forward
	$(PY) -m benchmarks.export
	$(PY) -m benchmarks.train
	$(PY) -m benchmarks.serving_overhead
	$(PY) -m benchmarks.tune_serving
	$(PY) -m benchmarks.abuse
	$(PY) -m benchmarks.rollout
	$(PY) -m benchmarks.batch_predict
	$(PY) -m benchmarks.precision

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build *.egg-info .pytest_cache
