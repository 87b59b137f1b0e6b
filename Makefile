# The two commands users rely on: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: install test demo bench bench-full bench-peers lint clean browser

# Bytecode is compiled at install (about 25 s once): where PYTHONDONTWRITEBYTECODE is set, as on CI machines, every
# process would otherwise compile pandas, Dagster and the SDKs from source at each start (1.85 s -> 1.0 s to import
# pmsync's sync here).
$(VENV)/.installed: pyproject.toml uv.lock
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) sync --frozen --quiet --compile-bytecode
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

# The Singer taps, each in its own venv under bench/peers/.venvs/, timed against pmsync on the same sandbox data.
PEER_TAPS := tap-jira tap-asana tap-trello
PEERS_SIZE ?= 2000
bench-peers: install
	for tap in $(PEER_TAPS); do \
	  test -x bench/peers/.venvs/$$tap/bin/$$tap || ( $(PYTHON) -m venv bench/peers/.venvs/$$tap && \
	    bench/peers/.venvs/$$tap/bin/pip install --quiet --disable-pip-version-check \
	      -r bench/peers/requirements-$$tap.txt ) || exit 1; \
	done
	$(VENV)/bin/python bench/peers/run.py --size $(PEERS_SIZE) --latency-ms 50

# Every stage against the sandbox (50 ms latency, vendor rate limits): 10,000 tasks, or 10,000 to 1,000,000.
bench: install
	$(VENV)/bin/python bench/run.py --quick

bench-full: install
	$(VENV)/bin/python bench/run.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
