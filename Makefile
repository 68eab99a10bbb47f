# storagebench.kvcache: `make run` runs the benchmark on localhost, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= /var/tmp/kvcache-make-run

.PHONY: venv run test test-unit test-ansible test-molecule test-fleet lint lint-ansible collection clean
# ansible-lint and molecule find the collection through a link at
# $(VENV)/collections/ansible_collections/storagebench/kvcache -> the checkout (inside the venv, which
# galaxy builds, ansible-test and the linters leave out). ansible-playbook needs none: the playbooks find
# the checkout through playbooks/collections/ (a committed link).
COLLECTIONS := $(abspath $(VENV))/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/storagebench/kvcache
ANSIBLE_ENV := ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH=$(CURDIR)/$(VENV)/bin:$$PATH

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-test.txt scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[mpi,report,live]' -r requirements-test.txt
	touch $@

collection: $(COLLECTION_LINK)

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn $(CURDIR) $@

# playbooks/kvcache_run.yml on this machine (inventory/localhost.ini: a ~10 s tiny-1b workload), then its headline.
# The headline states the run as a share of what fio gets from the same directory (a short baseline first).
RUN_BASELINE = {"kvcache_baseline": true, "kvcache_baseline_args": {"baseline_runtime": 3, "baseline_size_gb": 0.125}}

run: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/ansible-playbook -i inventory/localhost.ini playbooks/kvcache_run.yml \
		-e kvcache_results_dir=$(CURDIR)/results -e kvcache_cache_dir=$(RUN_DIR) -e '$(RUN_BASELINE)'
	@cat results/latest/headline.txt

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check kvcache tests bench

# The HTML report's browser test needs Chromium and the latency-tracing test bpftrace: installed as root, else those
# tests are skipped with the reason.
test-unit: venv
	@if [ "$$(id -u)" -eq 0 ]; then bash scripts/install-system-deps.sh --browser --tracing; fi
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-ansible: venv
	bash tests/ansible-test.sh $(VENV)

lint-ansible: venv collection
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-lint

# extensions/molecule/*: deps, cluster_facts and the whole run, on this machine (delegated driver, local connection),
# and fleet and fleet_slurm, the roles on three network-namespace hosts, by mpirun and by srun (root only: skipped
# with the reason otherwise).
test-molecule: venv collection
	@if [ "$$(id -u)" -eq 0 ]; then \
		bash scripts/install-system-deps.sh --slurm; \
		echo "$(VENV)/bin/molecule test --all"; \
		$(ANSIBLE_ENV) $(VENV)/bin/molecule test --all; \
	else \
		echo "test-molecule: SKIPPED scenarios fleet, fleet_slurm: they need root (network namespaces, mounts, sshd); running the others"; \
		echo "$(VENV)/bin/molecule test --all --exclude fleet --exclude fleet_slurm"; \
		$(ANSIBLE_ENV) $(VENV)/bin/molecule test --all --exclude fleet --exclude fleet_slurm; \
	fi

# tests/fleet: three network-namespace hosts with sshd; Ansible, Open MPI and a Slurm cluster across them (root only;
# skipped with the reason otherwise). -s shows the fleet runs' headlines.
test-fleet: venv collection
	@if [ "$$(id -u)" -eq 0 ]; then bash scripts/install-system-deps.sh --slurm; fi
	$(VENV)/bin/pytest -q -s -p no:cacheprovider tests/fleet
	@if ip netns list 2>/dev/null | grep -q '^kvfleet'; then echo "fleet namespaces left behind" >&2; exit 1; fi

test: lint lint-ansible test-unit test-ansible test-molecule test-fleet

clean:
	rm -rf $(VENV) build dist *.egg-info tests/output
