# The two commands a newcomer needs: `make run` and `make test`. Both build the virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench lint install clean fuzz

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start every service (web + worker) with the sample data on SQLite under var/.
run: $(STAMP)
	$(BIN)/python -m scripts.run

## Every test, on SQLite and PostgreSQL, against the real RabbitMQ; then the end-to-end tests (tests/e2e),
## one module at a time, since each starts the whole system (10-20 processes).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m "not e2e"
	$(BIN)/python -m pytest -q -p no:cacheprovider -m e2e tests/e2e

## Every benchmark (figures are ratios against a baseline measured in the same run), written to bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python -m bench.report

## A long fuzzing run: every service's API against its own OpenAPI spec (tests/fuzz), on SQLite and
## PostgreSQL, FUZZ_MAX_EXAMPLES (1000) cases per operation and role from a new seed each time, printed
## first (FUZZ_SEED=<seed> make fuzz draws the same cases again).
fuzz: $(STAMP)
	@seed=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "fuzz seed: $$seed"; \
	FUZZ_SEED=$$seed FUZZ_MAX_EXAMPLES=$(or $(FUZZ_MAX_EXAMPLES),1000) \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 tests/fuzz

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf var/*.db var/*.db-wal var/*.db-shm
