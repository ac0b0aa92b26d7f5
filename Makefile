# Set-up on a fresh Debian/Ubuntu machine with Python >= 3.10: `make demo` and `make test` do everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# System libraries that a dependency needs at import time (open3d: libusb-1.0, libgomp).
SYSTEM_LIBS := libusb-1.0-0 libgomp1
# What the tests need besides: Debian's chromium, which Playwright drives for LATTE's browser tests
# (never `playwright install`; the tests skip, saying why, where it is missing and cannot be installed).
TEST_SYSTEM_PKGS := chromium

.PHONY: demo test bench lint system-deps clean

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and exactly, so pip takes the local CPU wheel rather than resolving a newer CUDA build
	$(PIP) install --quiet "torch==2.13.0"
	# compat mode: a .pth onto the source tree, so packages added later import without reinstalling
	$(PIP) install --quiet -e ".[test]" --config-settings editable_mode=compat
	touch $@

system-deps:
	@missing=""; for p in $(SYSTEM_LIBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (install them with: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

demo: $(VENV)/.installed
	$(VENV)/bin/squeeze demo --out outputs/demo

test: $(VENV)/.installed
	@$(MAKE) --no-print-directory system-deps SYSTEM_LIBS="$(TEST_SYSTEM_PKGS)" || echo "LATTE's browser tests will be skipped"
	$(VENV)/bin/ruff check squeeze squeeze_suite squeezeseg squeezedet domain_adapt deploy latte bench tests
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	@set -e; for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f; done

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check squeeze squeeze_suite squeezeseg squeezedet domain_adapt deploy latte bench tests

clean:
	rm -rf $(VENV) outputs .pytest_cache
