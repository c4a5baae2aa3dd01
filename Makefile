# grukit: set up a virtual environment, run the main job, run the tests.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the C kernels (optional: without a compiler grukit runs its numba kernels); rebuilt when their source changes
CEXT   := $(VENV)/.cgru
CSRC   := setup.py $(wildcard grukit/nn/backends/_fused/*.c grukit/nn/backends/_fused/*.h)

.PHONY: install quickstart test browser bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	touch $(STAMP)

$(CEXT): $(STAMP) $(CSRC)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(CEXT)

install: $(STAMP) $(CEXT)

quickstart: install
	$(BIN)/grukit quickstart

# headless Chromium for the web-page tests (tests/test_serve_browser.py): installed when missing and apt-get is
# usable (root, or password-less sudo); elsewhere those tests skip with one line saying why
APT := $(shell if [ "$$(id -u)" = 0 ]; then echo apt-get; elif sudo -n true 2>/dev/null; then echo "sudo apt-get"; fi)

browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ -n "$(APT)" ]; then \
	  echo "installing chromium and chromium-driver for the browser tests"; \
	  { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq chromium chromium-driver; } \
	    || echo "warning: installing chromium failed: the browser tests will skip, saying why"; \
	else echo "note: no headless Chromium and no usable apt-get: the browser tests will skip"; fi

test: install browser
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/grukit bench

clean:
	rm -rf $(VENV) build *.egg-info grukit/nn/backends/_fused/_cgru*.so
