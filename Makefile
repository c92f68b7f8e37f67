PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The whole thing against zohosim, with a summary (scripts/demo.py; DEMO_ROWS=5000 for a short one).
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

# The whole repository. bench/ is checked file by file: bench/zohosim.py would shadow zohosim/.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy cli pipeline tasks zohosim scripts
	$(BIN)/mypy bench/*.py
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
