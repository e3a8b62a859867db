# Two-command set-up: `make demo` and `make test` each create .venv if it is
# missing, install the project into it and run. Only the package index is needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch used on the project's machines; a torch already in the
# venv (e.g. a CUDA build the user installed) is kept as it is.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo lint test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/stlm demo

# Lint and format check, the import-layer contract (pyproject: tool.importlinter), the typed public API.
lint: install
	$(VENV)/bin/ruff check stlm tests bench
	$(VENV)/bin/ruff format --check stlm tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: lint
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
