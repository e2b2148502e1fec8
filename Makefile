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

test: $(STAMP) browser
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

# --- The HTML viewer: a headless browser for its tests, its benchmark, the README screenshot ---
.PHONY: browser bench-view screenshots

# Debian's chromium + chromedriver, installed only when missing and only as root (CI); elsewhere
# nothing is installed and the browser tests skip, saying why.
browser:
	@if [ ! -x /usr/bin/chromedriver ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	fi

bench-view: $(STAMP) browser
	$(BIN)/python -m bench.viewer --json traces/viewer-bench.json

screenshots: $(STAMP) browser
	$(BIN)/python -m bench.screenshot docs/view.png
