"""The kvcache_command module's external commands, replaced for every test here."""

import json

import pytest
from ansible.module_utils import basic
from ansible_collections.storagebench.kvcache.tests.unit.plugins.modules.module_harness import (
    OPENMPI_VERSION,
    patch_exits,
)


@pytest.fixture
def commands(monkeypatch, description):
    """Stand-ins for `PYTHON -m kvcache describe` and `MPI_BIN --version`; records every argv the module runs.

    Set `describe` or `version` to (rc, stdout, stderr) or to an OSError to change what they return.
    """
    state = {"calls": [], "describe": (0, json.dumps(description), ""), "version": (0, OPENMPI_VERSION, "")}

    def run_command(self, args, **kwargs):
        state["calls"].append(list(args))
        if args[1:] == ["-m", "kvcache", "describe"]:
            result = state["describe"]
        elif args[1:] == ["--version"]:
            result = state["version"]
        else:
            raise AssertionError(f"unexpected command {args!r}")
        if isinstance(result, OSError):
            raise OSError(result.errno, result.strerror)
        return result

    patch_exits(monkeypatch)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    return state
