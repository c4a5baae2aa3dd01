# grukit: set up a virtual environment, run the main job, run the tests.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the C kernels (optional: without a compiler grukit runs its numba kernels); rebuilt when their source changes
CEXT   := $(VENV)/.cgru
CSRC   := setup.py grukit/nn/backends/_fused/_cgru.c grukit/nn/backends/_fused/cgru_impl.h

.PHONY: install quickstart test bench clean

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

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/grukit bench

clean:
	rm -rf $(VENV) build *.egg-info grukit/nn/backends/_fused/_cgru*.so
