# wsplugin: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
DSTAMP := $(VENV)/.installed-docs

.PHONY: run test lint format conformance clean venv system-deps bench bench-quick profile docs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Editable "compat" mode puts the checkout on sys.path, which is what lets
# Twisted find the twisted/plugins dropin from anywhere.
$(STAMP): $(PY) setup.py pyproject.toml wsplugin/_speedups.c
	$(PIP) install --quiet -e . --config-settings editable_mode=compat
	touch $@

$(TSTAMP): $(STAMP)
	$(PIP) install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

$(DSTAMP): $(STAMP)
	$(PIP) install --quiet -e '.[docs]' --config-settings editable_mode=compat
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/twistd --nodaemon --pidfile= ws --port tcp:8888

test: $(TSTAMP)
	$(PY) -b -W error::DeprecationWarning -m twisted.trial --temp-directory=build/_trial_temp tests

lint: $(TSTAMP)
	$(VENV)/bin/ruff check wsplugin tests examples conformance twisted docs/conf.py docs/_ext
	$(VENV)/bin/ruff format --check wsplugin tests examples conformance twisted docs/conf.py docs/_ext

format: $(TSTAMP)
	$(VENV)/bin/ruff format wsplugin tests examples conformance twisted docs/conf.py docs/_ext
	$(VENV)/bin/ruff check --fix wsplugin tests examples conformance twisted docs/conf.py docs/_ext

# The documentation site (docs/index.md, Sphinx + Furo + MyST): warnings are
# errors (-W) and every reference to wsplugin's API must resolve (-n); the
# HTML lands in build/docs/html (git-ignored).
docs: $(DSTAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -n -q -b html docs build/docs/html

# make conformance CONFORMANCE_ARGS="--mode split --cases '6.*'" runs a subset
conformance: $(TSTAMP)
	$(PY) conformance/run.py $(CONFORMANCE_ARGS)

# Benchmarks (benchmarks/README.md): wsplugin against raw Autobahn, websockets,
# aiohttp, picows and Node ws under one C load client; never part of `test`.
bench: $(STAMP)
	$(PY) benchmarks/run.py

# 1 short run; ends with wsplugin's figures against benchmarks/baseline.json
bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick

# Flame graphs of workloads A, E and F (docs/profiles/*.svg): py-spy for CPU,
# tracemalloc for memory; see docs/performance.md, "Profiles".
profile: $(STAMP)
	$(PIP) install --quiet py-spy
	$(PY) benchmarks/profile/run.py

# Debian packages some tests need (headless Chromium); needs root or sudo.
# Without them those tests skip locally (CI always installs them).
system-deps:
	bash .ci/install-system-deps

clean:
	rm -rf build dist *.egg-info _trial_temp
