# `make demo` and `make test` each set everything up from scratch and run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-stress lint bench samples serve clean

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

# The fast layer alone: wire decoders, readers, views (seconds).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m fast

# The suite RUNS times (default 5) with BUSY cores (default 1) kept busy by other processes:
# a test that races the server's threads shows up here.  Prints how many runs passed.
RUNS ?= 5
BUSY ?= 1
test-stress: $(STAMP)
	$(BIN)/python tests/stress.py --runs $(RUNS) --busy $(BUSY)

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

# --- Course material: generated walkthroughs of a real connection (wstrace explain) ----------
COURSE := docs/course
.PHONY: course
course: $(STAMP)
	mkdir -p $(COURSE)
	$(BIN)/wstrace explain --http httptools --ws websockets -o $(COURSE)/websockets.md
	$(BIN)/wstrace explain --http httptools --ws websockets-sansio -o $(COURSE)/websockets-sansio.md
	$(BIN)/wstrace explain --http httptools --ws wsproto -o $(COURSE)/wsproto.md
	$(BIN)/wstrace explain --compare -o $(COURSE)/compare.md

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

# Two waves of 1,000 concurrent connections on `wstrace serve`, collector down:
# connections whole in the file, spans written / dropped, RSS per wave.
.PHONY: load
load: $(STAMP)
	$(BIN)/python -m bench.burst
