# The README's two commands: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXT    := src/minirouter/_fastpath$(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
# Debian packages the tests and benchmarks drive for real.
APT_PKGS := wrk nginx-light redis-server chromium
PYTEST_ARGS ?=

.PHONY: run test bench lint build system-deps clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel 'Cython>=3.0.10,<3.4'
	$(BIN)/pip install -q --no-build-isolation -e '.[test,redis,control]'
	touch $@

$(EXT): $(STAMP) src/minirouter/_fastpath.pyx setup.py
	$(BIN)/python setup.py -q build_ext --inplace

build: $(STAMP) $(EXT)

system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: build
	@$(BIN)/minirouter up

test: build system-deps
	$(BIN)/pytest --benchmark-disable $(PYTEST_ARGS)

bench: build system-deps
	$(BIN)/pytest benchmarks/bench_*.py --benchmark-only --benchmark-autosave --benchmark-storage=.benchmarks
	$(BIN)/python benchmarks/e2e_load.py --json .benchmarks/e2e-$$(date +%Y%m%d-%H%M%S).json

lint: build
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf build $(EXT) src/minirouter/_fastpath.c src/minirouter/_fastpath.html
