# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project into it when needed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_SILENT := true

.PHONY: install lint test test-fast demo bench cache clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint
	WANDB_MODE=disabled $(PY) -m pytest -q

test-fast: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) scripts/demo.py

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf runs .pytest_cache
