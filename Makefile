# The two commands of the README: `make run` (the main job, CPU defaults) and `make test`.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install browser run test
# The rtx extra (TensorRT-RTX) builds real TensorRT plans without a GPU, so `make test` (CI) checks them.
install:
	$(PIP_INSTALL) -e ".[test,rtx]"

# Headless Chromium renders the HTML validation report in one test; that test skips
# with its reason where Chromium cannot be installed (not root, no apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the HTML rendering test will skip"; }

run: install
	inception-deploy run

test: install browser
	$(PYTHON) -m pytest -q
