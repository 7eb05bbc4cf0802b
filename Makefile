# The two commands the README promises: `make demo` (main job) and `make test` (test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.seqssm-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -c constraints.txt  # the versions the suite last passed with
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/seqssm demo --out runs/demo --overwrite

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_cpu_scan.py
	$(PY) benchmarks/bench_tokenizer.py

clean:
	rm -rf runs build dist *.egg-info
