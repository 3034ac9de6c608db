# dropnotes task runner. The two commands of the README:
#   make book   — render the book (executes every chapter with profile=auto) into _build/html
#   make test   — nbval: every chapter at the smoke profile, its documented outputs compared; then the
#                 package tests, every chapter (quick profile) through papermill, and the book built
#                 from those executed notebooks
# Both create .venv and install the package with its extras when missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# torch: a CPU build unless a GPU is present. `pip install torch==2.13.0` takes the CPU wheel where
# one is on disk (as on our CI machines); elsewhere, CPU-only machines use PyTorch's CPU index.
# Override with e.g. `make TORCH=torch TORCH_INDEX=` for the default (CUDA) build.
TORCH       ?= torch==2.13.0
HAS_GPU     := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
LOCAL_TORCH := $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl)
TORCH_INDEX ?= $(if $(or $(HAS_GPU),$(LOCAL_TORCH)),,https://download.pytorch.org/whl/cpu)

# Offline data: use ../shared/data when it exists (CI), else the user cache (downloads on demand).
ifneq ($(wildcard ../shared/data),)
export DROPNOTES_DATA ?= $(abspath ../shared/data)
endif

.PHONY: help venv test test-smoke test-unit test-package book clean
help:
	@echo "make book   render the book into _build/html (profile=auto)"
	@echo "make test   nbval at the smoke profile + package tests + every chapter (quick profile) + book build"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

venv: $(BIN)/.installed

# The test command (.ci/run calls exactly this). First nbval re-runs every chapter at the smoke profile
# (seconds each) and compares the cells tagged nbval-check-output with their committed outputs; results
# and checkpoints of that run go to scratch folders, never into results/.
SMOKE_ENV := DROPNOTES_PROFILE=smoke DROPNOTES_PROGRESS=0 DROPNOTES_RESULTS=$(CURDIR)/_build/smoke-results \
	DROPNOTES_CHECKPOINTS=$(CURDIR)/_build/smoke-checkpoints
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval-sanitize.cfg
test: $(BIN)/.installed
	$(BIN)/ruff check dropnotes tests
	rm -rf _build/smoke-results _build/smoke-checkpoints
	$(SMOKE_ENV) $(BIN)/python -m pytest $(NBVAL) chapters scorecard.ipynb
	DROPNOTES_PROFILE=quick $(BIN)/python -m pytest -n auto -m "not notebooks" --durations=15
	DROPNOTES_PROFILE=quick $(BIN)/python -m pytest -m notebooks --durations=15

# Only the nbval check (about a minute).
test-smoke: $(BIN)/.installed
	rm -rf _build/smoke-results _build/smoke-checkpoints
	$(SMOKE_ENV) $(BIN)/python -m pytest $(NBVAL) chapters scorecard.ipynb

# Unit tests only (no subprocesses, kills, torchrun or notebooks), on every core: for quick iteration.
test-unit: $(BIN)/.installed
	$(BIN)/python -m pytest -n auto -m "not notebooks and not slow" --durations=10

# Package tests only (minutes), without the notebooks.
test-package: $(BIN)/.installed
	$(BIN)/python -m pytest -n auto -m "not notebooks"

# The book. Neither jupyter-cache (keyed on code cells) nor Sphinx (which re-reads only changed
# pages) sees edits to the dropnotes package or newly stored results, so when either changes the
# execution cache and the doctrees are cleared and every page is executed again.
book: $(BIN)/.installed
	@mkdir -p _build
	@src=$$(cat $$(find dropnotes -name '*.py' | sort) $$(find results -name '*.json' ! -name 'quick.json' | sort) \
	  | sha256sum | cut -c1-16); \
	if [ "$$src" != "$$(cat _build/.dropnotes-src 2>/dev/null)" ]; then \
	  echo "dropnotes or stored results changed: executing every page again"; \
	  rm -rf _build/.jupyter_cache _build/.doctrees; fi; \
	$(BIN)/jupyter-book build . -W --keep-going && echo "$$src" > _build/.dropnotes-src
	@echo "book: $(CURDIR)/_build/html/index.html"

clean:
	rm -rf _build runs
