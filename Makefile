# The two commands of the README: `make run` (the main job, CPU defaults) and `make test`.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install browser triton-server run test
# The rtx extra (TensorRT-RTX) builds real TensorRT plans without a GPU, so `make test` (CI) checks them;
# the triton extra (tritonclient) writes Triton configs and talks to triton:// endpoints.
install:
	$(PIP_INSTALL) -e ".[test,rtx,triton]"

# A real tritonserver (from the nvidia-pytriton wheel, Python backend only, no GPU needed) for the
# serving tests, installed beside the cache without touching this Python: the wheel's files via
# pip --target --no-deps, and the Python backend's own venv (its stub needs NumPy 1.x).
triton-server: install
	$(PYTHON) -m inception_deploy.serving.local_server install

# Headless Chromium renders the HTML validation report in one test; that test skips
# with its reason where Chromium cannot be installed (not root, no apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the HTML rendering test will skip"; }

run: install
	inception-deploy run

# INCEPTION_DEPLOY_REQUIRE_TRITON: in CI a missing server fails the serving tests instead of skipping them.
test: install browser triton-server
	INCEPTION_DEPLOY_REQUIRE_TRITON=1 $(PYTHON) -m pytest -q
