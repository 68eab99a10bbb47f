"""The fleet fixture: three network-namespace hosts for the whole session, torn down safely at the end."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fleet import Fleet, namespaces_left  # noqa: E402
from playbook_helpers import collections_path  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402
from slurm_cluster import missing as slurm_missing  # noqa: E402


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


@pytest.fixture(scope="session")
def collections(tmp_path_factory):
    """A collections path holding storagebench.kvcache as a link to this checkout, for the playbook tests."""
    return collections_path(str(tmp_path_factory.mktemp("collections")))


@pytest.fixture(scope="session")
def slurm_fleet(fleet):
    """A Slurm cluster on the fleet's hosts (slurm_cluster.py), stopped before the fleet goes down."""
    lacking = slurm_missing()
    if lacking:
        pytest.skip(f"the Slurm tests need {', '.join(lacking)} (make test-fleet installs slurm-wlm and munge)")
    cluster = SlurmCluster(fleet).up()
    fleet.slurm = cluster  # the fleet's own teardown stops it first, should the session end early
    yield cluster
    cluster.down()
    fleet.slurm = None
