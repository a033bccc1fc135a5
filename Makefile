# Seedrec: `make setup`, then `make test` or `make demo`.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-fast demo bench lint clean

setup:
	bash scripts/setup.sh

test:
	$(PY) -m pytest -q -p no:cacheprovider

test-fast:
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

demo:
	$(PY) -m seedrec.demo

bench:
	$(PY) -m seedrec.cli bench sample_build

lint:
	.venv/bin/ruff check .

clean:
	rm -rf bench_results .pytest_cache build *.egg-info
