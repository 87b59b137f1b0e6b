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

test: install browser
	$(VENV)/bin/python -m pytest -n 2 -q

demo: install
	$(VENV)/bin/pmsync demo --size small

# Debian's chromium, for the browser tests (they skip, saying why, where it cannot be had); Playwright downloads no
# browser. Installing needs root and apt: elsewhere this only says so and the tests skip.
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium is not installed and cannot be here: the browser tests will be skipped"; }

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
