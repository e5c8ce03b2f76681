# Layers & Blocks: set up, build, test, read.
#
#   make book    virtual environment + web assets + build the book (executes every changed chapter)
#   make test    the same set-up, then every test (builds the book once, with forced execution)
#   make serve   serve _build/html on http://127.0.0.1:8000
#   make lab     open the chapters in JupyterLab (live kernel, live widgets)
#
# Everything is installed inside the repository: .venv/ (Python), node_modules/ and
# _webassets/ (JavaScript the site serves itself). Nothing here needs root.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# cache: re-use the outputs of chapters whose code did not change (local rebuilds);
# force: execute every chapter that Sphinx reads. CI sets CI=true and gets force.
EXECUTE ?= $(if $(CI),force,cache)
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.package-lock.json
ASSETS_STAMP := _webassets/.fetched
HTML_MANAGER := node_modules/@jupyter-widgets/html-manager/dist

.PHONY: help book test serve lab assets venv lint bench clean-notebooks clean distclean

help:
	@echo "make book   set up, then build the book into _build/html (EXECUTE=$(EXECUTE))"
	@echo "make test   set up, then run every test (unit, notebooks, book build, browser, lint)"
	@echo "make serve  serve the built book on http://$(HOST):$(PORT)/"
	@echo "make lab    open the chapters in JupyterLab"
	@echo "make bench  run the build benchmarks (numbers quoted in README.md)"
	@echo "make clean-notebooks  strip outputs from chapters/*.ipynb before committing"
	@echo "make clean  remove _build/ and test artifacts (keeps .venv/ and node_modules/)"

# ---------------------------------------------------------------- set-up

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt
	@touch $@

assets: $(ASSETS_STAMP)

$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  echo "error: npm is not installed. The book serves its own copies of require.js, the"; \
	  echo "Jupyter widgets manager and MathJax, fetched with npm from the npm registry."; \
	  echo "Install Node.js 20 or newer with npm (Debian/Ubuntu: sudo apt-get install nodejs npm),"; \
	  echo "then run make again."; \
	  exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

# Copy only what the pages load. Not under _static/: see html_static_path in _config.yml.
# (book, test and bench list the assets first, so a missing npm stops them before the
# long Python install.)
$(ASSETS_STAMP): $(NODE_STAMP)
	rm -rf _webassets
	mkdir -p _webassets/requirejs _webassets/jupyter-widgets/html-manager/dist
	cp node_modules/requirejs/require.js _webassets/requirejs/
	cp $(HTML_MANAGER)/embed-amd.js $(HTML_MANAGER)/embed.js.LICENSE.txt \
	   $(HTML_MANAGER)/*.woff2 $(HTML_MANAGER)/*.woff $(HTML_MANAGER)/*.ttf \
	   $(HTML_MANAGER)/*.eot $(HTML_MANAGER)/*.svg \
	   _webassets/jupyter-widgets/html-manager/dist/
	cp -r node_modules/mathjax/es5 _webassets/mathjax
	cp node_modules/mathjax/LICENSE _webassets/mathjax/
	@touch $@

# ---------------------------------------------------------------- build and read

book: $(ASSETS_STAMP) $(VENV_STAMP)
	$(BIN)/python tools/build_book.py --execute $(EXECUTE)
	@echo
	@echo "The book is in $(CURDIR)/_build/html/index.html"
	@echo "Open that file in a browser, or run: make serve"

serve:
	@test -f _build/html/index.html || { echo "No book yet: run make book first."; exit 1; }
	@echo "Serving _build/html on http://$(HOST):$(PORT)/ (Ctrl-C to stop)"
	$(or $(wildcard $(BIN)/python),$(PYTHON)) -m http.server --bind $(HOST) \
	  --directory _build/html $(PORT)

# Jupyter refuses to run as root unless told; containers often are root.
lab: $(VENV_STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=$(HOST) \
	  $(if $(filter 0,$(shell id -u)),--allow-root) chapters

# ---------------------------------------------------------------- checks

test: $(ASSETS_STAMP) $(VENV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV_STAMP)
	$(BIN)/ruff check book_src tests tools benchmarks/bench_book.py

bench: $(ASSETS_STAMP) $(VENV_STAMP)
	$(BIN)/python benchmarks/bench_book.py

clean-notebooks: $(VENV_STAMP)
	$(BIN)/python tools/clean_notebooks.py

clean:
	rm -rf _build test-artifacts

distclean: clean
	rm -rf $(VENV) node_modules _webassets
