# The README's two commands: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The compiled modules (see setup.py) and what they are built from: editing any of these
# sources rebuilds them, so a stale compiled module never hides an edited .py.
EXT    := $(VENV)/.extensions-stamp
PXD    := $(wildcard src/minirouter/core/*.pxd)
EXT_SRC := src/minirouter/_fastpath.pyx $(PXD) $(PXD:.pxd=.py)
# Debian packages the tests and benchmarks drive for real.
APT_PKGS := wrk nginx-light redis-server chromium valgrind
PYTEST_ARGS ?=

.PHONY: run test bench lint build system-deps clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel 'Cython>=3.0.10,<3.4'
	$(BIN)/pip install -q --no-build-isolation -e '.[test,redis,control]'
	touch $@

$(EXT): $(STAMP) $(EXT_SRC) setup.py
	@# cythonize compares the sources' dates only: new build settings regenerate every C file.
	@if [ setup.py -nt $@ ]; then rm -f src/minirouter/_fastpath.c $(PXD:.pxd=.c); fi
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: $(STAMP) $(EXT)

system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: build
	@$(BIN)/minirouter up

# The data-plane tests run a second time on the plain-Python sources (what a pure-Python
# install runs), so that compiled and plain Python are held to the same behaviour.
PURE_TESTS := tests/test_protocol.py tests/test_balancer.py tests/test_metrics.py \
	tests/hardening tests/integration

test: build system-deps
	$(BIN)/pytest --benchmark-disable $(PYTEST_ARGS)
	MINIROUTER_NO_EXTENSIONS=1 $(BIN)/pytest --benchmark-disable $(PYTEST_ARGS) $(PURE_TESTS)

bench: build system-deps
	$(BIN)/pytest benchmarks/bench_*.py --benchmark-only --benchmark-autosave --benchmark-storage=.benchmarks
	$(BIN)/python benchmarks/e2e_load.py --json .benchmarks/e2e-$$(date +%Y%m%d-%H%M%S).json

lint: build
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf build $(EXT) src/minirouter/*.so src/minirouter/core/*.so src/minirouter/_fastpath.c \
		src/minirouter/_fastpath.html $(PXD:.pxd=.c) $(PXD:.pxd=.html)
