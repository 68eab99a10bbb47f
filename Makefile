# storagebench.kvcache: `make run` runs the benchmark on localhost, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= /var/tmp/kvcache-make-run

.PHONY: venv run test test-unit test-ansible lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-test.txt scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[mpi]' -r requirements-test.txt
	touch $@

run: venv
	mkdir -p $(RUN_DIR) results
	$(VENV)/bin/kvcache run --model tiny-1b --num-users 4 --duration 10 \
		--gpu-mem-gb 0 --cpu-mem-gb 0.25 --cache-dir $(RUN_DIR) --output results/make-run.json

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check kvcache tests bench

test-unit: venv
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-ansible: venv
	bash tests/ansible-test.sh $(VENV)

test: lint test-unit test-ansible

clean:
	rm -rf $(VENV) build dist *.egg-info tests/output
