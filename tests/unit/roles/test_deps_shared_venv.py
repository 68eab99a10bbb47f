"""The deps role's choice of one installing host per shared venv (roles/deps/tasks/shared_venv.yml): the probe
directories, the probes a host counts, and which hosts install, from the role's own expressions (vars/main.yml)
templated as Ansible templates them, with the facts each host would have."""

import os

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                     "roles")  # fmt: skip


def _role_variables():
    loader = DataLoader()
    variables = {}
    for parts in (("kvcache", "defaults"), ("deps", "defaults"), ("deps", "vars")):
        variables.update(loader.load_from_file(os.path.join(ROLES, *parts, "main.yml"), trusted_as_template=True))
    return loader, variables


def _template(name, **facts):
    loader, variables = _role_variables()
    variables.update(facts)
    return Templar(loader=loader, variables=variables).template(variables[name])


def _installers(play, seen):
    """Which hosts of `play` (in play order) install, given the hosts whose probes each one saw (`seen`; a host
    missing from it did not probe)."""
    hostvars = {name: {"inventory_hostname": name, **({"deps_probe_seen": seen[name]} if name in seen else {})}
                for name in play}  # fmt: skip
    return [name for name in play if name in seen
            and _template("__deps_earlier_sharers", inventory_hostname=name, ansible_play_batch=play,
                          hostvars=hostvars, deps_probe_seen=seen[name]) == []]  # fmt: skip


def test_the_probes_go_beside_the_venv_and_the_source():
    with open(os.path.join(ROLES, "kvcache", "defaults", "main.yml"), encoding="utf-8") as stream:
        venv = yaml.safe_load(stream)["kvcache_venv"]
    assert _template("__deps_probe_dirs", deps_src_dir=os.path.dirname(venv) + "/src") == [os.path.dirname(venv)]
    assert _template("__deps_probe_dirs", deps_venv="/nfs/a/venv/", deps_src_dir="/local/src") == ["/nfs/a", "/local"]


def test_a_host_counts_the_probes_of_this_play_hosts_only():
    prefix = _template("__deps_probe_prefix")
    files = [{"path": f"/opt/x/{prefix}{name}"} for name in ("h1", "h2", "not-in-play")]
    files.append({"path": f"/src/{prefix}h2"})  # the same host's probe beside the source too
    seen = _template("__deps_probe_hosts_seen", deps_probes_found={"files": files}, ansible_play_batch=["h1", "h2"])
    assert seen == ["h1", "h2"]


def test_the_first_host_in_play_order_of_those_sharing_installs():
    play = ["a", "b", "c", "d", "e"]
    # a and b share; c and d share but only c saw d's probe (a network filesystem's cache); e shares with nobody.
    seen = {"a": ["a", "b"], "b": ["a", "b"], "c": ["c", "d"], "d": ["d"], "e": ["e"]}
    assert _installers(play, seen) == ["a", "c", "e"]
    # Play order decides, not the names.
    assert _installers(["b", "a"], {"a": ["a", "b"], "b": ["a", "b"]}) == ["b"]


def test_hosts_that_share_nothing_all_install():
    assert _installers(["a", "b", "c"], {"a": ["a"], "b": ["b"], "c": ["c"]}) == ["a", "b", "c"]


def test_a_host_that_did_not_probe_takes_no_turn():
    # x runs earlier in the play but not this role (no probe, no deps_probe_seen): b still installs after it.
    assert _installers(["x", "b", "c"], {"b": ["b", "c"], "c": ["b", "c"]}) == ["b"]
