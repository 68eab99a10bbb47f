"""Running a module's main() in-process: exit_json/fail_json raise instead of exiting the test."""

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common import warnings as module_warnings
from ansible.module_utils.testing import patch_module_args

# What `mpirun --version` prints for each MPI flavor.
OPENMPI_VERSION = "mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n"
MPICH_VERSION = "HYDRA build details:\n    Version:                                 4.1.2\n"


class AnsibleExitJson(Exception):
    """exit_json was called; args[0] is the module's result."""


class AnsibleFailJson(Exception):
    """fail_json was called; args[0] is the module's result, with msg."""


def patch_exits(monkeypatch):
    """Make exit_json and fail_json raise, keeping only the warnings of the current test."""

    def exit_json(self, **kwargs):
        warnings = list(module_warnings.get_warning_messages())
        if warnings:  # as the real exit_json: the key only when there are warnings
            kwargs["warnings"] = warnings
        raise AnsibleExitJson(kwargs)

    def fail_json(self, **kwargs):
        raise AnsibleFailJson(kwargs)

    monkeypatch.setattr(module_warnings, "_global_warnings", {})
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


def run_module(main, args, check_mode=False):
    """The result of a module run that succeeded."""
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args):
        with pytest.raises(AnsibleExitJson) as result:
            main()
    return result.value.args[0]


def fail_module(main, args):
    """The result of a module run that failed."""
    with patch_module_args(args):
        with pytest.raises(AnsibleFailJson) as result:
            main()
    return result.value.args[0]
