"""The fleet fixture: three network-namespace hosts for the whole session, torn down safely at the end."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fleet import Fleet, namespaces_left  # noqa: E402


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("fleet tests need root (network namespaces, mounts, sshd); CI runs as root")
    if namespaces_left():
        pytest.fail(f"network namespaces of an earlier fleet are still there: {namespaces_left()}")
    hosts = Fleet(str(tmp_path_factory.mktemp("fleet")), count=3).up()
    yield hosts
    hosts.down()
    assert namespaces_left() == [], "teardown must remove every namespace it made"
