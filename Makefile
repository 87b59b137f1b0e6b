# The two commands users rely on: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: install test demo bench bench-full lint clean browser

$(VENV)/.installed: pyproject.toml uv.lock
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) sync --frozen --quiet
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/python -m pytest -n 2 -q

demo: install
	$(VENV)/bin/pmsync demo --size small

# Debian's chromium, for the UI tests (tests/test_ui.py skips without it); Playwright downloads no browser.
browser:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
