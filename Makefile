# `make demo` and `make test` each set everything up from scratch and run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench samples serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wstrace demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

serve: $(STAMP)
	$(BIN)/python -m demo_app

bench: $(STAMP)
	$(BIN)/python -m bench

samples: $(STAMP)
	$(BIN)/wstrace samples

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Two waves of 1,000 concurrent connections on `wstrace serve`, collector down:
# connections whole in the file, spans written / dropped, RSS per wave.
.PHONY: load
load: $(STAMP)
	$(BIN)/python -m bench.burst
