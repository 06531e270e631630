# The README's two commands. Each does all of its own set-up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned here, not in pyproject.toml: this CPU build lies on local disk,
# while an unpinned torch would pull a CUDA build of several GB.
TORCH  := torch==2.13.0

.PHONY: demo test lint install clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python -m privml demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy privml

# Two processes (pytest-xdist): the suite waits on fsyncs and servers as much as on the CPU.
test: lint
	$(BIN)/python -m pytest -n 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build dist
