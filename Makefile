# The two commands of the README: `make run` (the main job, CPU defaults) and `make test`.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install run test
install:
	$(PIP_INSTALL) -e ".[test]"

run: install
	inception-deploy run

test: install
	$(PYTHON) -m pytest -q
