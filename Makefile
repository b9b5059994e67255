# The two commands a newcomer needs: `make run` and `make test`. Both build the virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start every service (web + worker) with the sample data on SQLite under var/.
run: $(STAMP)
	$(BIN)/python -m scripts.run

## Every test, on SQLite and PostgreSQL, against the real RabbitMQ.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup

## Benchmarks (figures are ratios against a baseline measured in the same run).
bench: $(STAMP)
	$(BIN)/python -m bench.relay_throughput
	$(BIN)/python -m bench.relay_throughput --database-url postgresql://postgres@127.0.0.1:5432/postgres
	$(BIN)/python -m bench.sweep --items 1000000 --organizations 10000 --database-url postgresql://postgres@127.0.0.1:5432/postgres
	$(BIN)/python -m bench.notifier_throughput

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf var/*.db var/*.db-wal var/*.db-shm
