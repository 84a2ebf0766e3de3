# Two commands do all the set-up: `make test` and `make demo`. Each creates .venv first if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/wsol demo --out runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
