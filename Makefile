# The two commands of the README:
#   make demo   set up a virtualenv and run bgcore on the bundled demo bench
#   make test   set up a virtualenv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench setup clean

$(BIN)/bgcore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,embedded,postgres,mariadb]'
	touch $(BIN)/bgcore

setup: $(BIN)/bgcore

demo: setup
	$(BIN)/bgcore --bench . migrate
	$(BIN)/bgcore --bench . start

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/pip install --quiet -e '.[test,embedded,postgres,mariadb,bench]'
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.workers
	$(BIN)/python -m benchmarks.faults
	$(BIN)/python -m benchmarks.capacity
	$(BIN)/python -m benchmarks.dashboard

clean:
	rm -rf $(VENV) .bgcore
