# The two commands a fresh machine needs (see README): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

.PHONY: run test setup serve browser-deps lint

## The project itself is installed editable (pyproject.toml), so `import core` works from anywhere.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
	touch $@

setup: $(VENV)/.installed

## Debian's chromium and a CJK font for the browser test (CI runs as root on Debian); installed when missing.
browser-deps:
	@if [ -x $(CHROMIUM) ] && [ -f $(CJK_FONT) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "note: install chromium and a CJK font (fonts-noto-cjk) for the browser test; it is skipped without chromium"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk; \
	elif sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk; \
	else \
		echo "note: run 'sudo apt-get install chromium fonts-noto-cjk' for the browser test; it is skipped without chromium"; \
	fi

## Install into .venv and start the dashboard on http://127.0.0.1:$(PORT) (the demo model unless one is set); the
## URL is printed once the dashboard answers its health check, so it is there to open, not still starting.
## It listens on this machine only (.streamlit/config.toml); for a team, see core/access.py (sign-in).
PORT ?= 8501
run: setup
	@$(PY) -m streamlit run dashboard/app.py --server.port $(PORT) & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid; exit 0' INT TERM; \
	until $(PY) -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(PORT)/_stcore/health', timeout=2)" 2>/dev/null; do \
		kill -0 $$pid 2>/dev/null || exit 1; sleep 1; \
	done; \
	echo "Loupe is up: http://127.0.0.1:$(PORT) (this machine only; add --server.address 0.0.0.0 and a sign-in to share it)"; \
	wait $$pid

## ruff over the tree and mypy over core/ (both configured in pyproject.toml).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

## Install into .venv (and the browser test's chromium + CJK font), lint, and run the whole test suite.
test: setup browser-deps lint
	$(PY) -m pytest

## Start the OpenAI-compatible API server.
serve: setup
	$(PY) -m core serve
