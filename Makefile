# The README's two commands. Each does all of its own set-up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned here, not in pyproject.toml: this CPU build lies on local disk,
# while an unpinned torch would pull a CUDA build of several GB.
TORCH  := torch==2.13.0

.PHONY: demo test lint docs install clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[all,dev,docs]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python -m privml demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy privml

# Two processes (pytest-xdist): the suite waits on fsyncs and servers as much as on the CPU.
# The tutorials run once, in the documentation build (a notebook that raises fails it).
test: lint
	$(BIN)/python -m pytest -n 2
	$(MAKE) docs

# The documentation site: warnings are errors (a broken reference, a public name without a
# docstring or a page, a notebook that raises). Every notebook is executed, with CI=true,
# two at a time; PRIVML_DOCS_EXECUTE=0 renders them unexecuted. Diagrams need Graphviz's dot.
docs: install
	@command -v dot >/dev/null || { echo "make docs needs Graphviz: apt-get install graphviz"; exit 1; }
	CI=$${CI:-true} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/sphinx-build -W --keep-going -n -j 2 -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build dist docs/_build docs/api docs/tutorials/*.ipynb
