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
	# Test oracle only (the runtime never imports it): RobustBench's architecture modules, without its
	# pinned dependencies; its wheel also installs a top-level `tests` package that would shadow ours.
	$(PY) -m pip install --no-deps robustbench==1.1.1
	rm -rf "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tests"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/wsol demo --out runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
