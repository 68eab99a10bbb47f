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


def _hostvars(play, seen):
    """Each host's variables: a host missing from `seen` did not probe; one given a list saw those probes beside
    its venv (and beside its source, which is the same directory by default)."""
    hostvars = {name: {"inventory_hostname": name} for name in play}
    for name, hosts in seen.items():
        hostvars[name]["deps_probe_seen"] = hosts if isinstance(hosts, dict) else {"venv": hosts, "src": hosts}
    return hostvars


def _per_host(name, play, seen):
    """`name` of the role's variables, on each host of `play` that probed, in play order."""
    hostvars = _hostvars(play, seen)
    return {host: _template(name, inventory_hostname=host, ansible_play_batch=play, hostvars=hostvars,
                            deps_probe_seen=hostvars[host]["deps_probe_seen"])
            for host in play if host in seen}  # fmt: skip


def _installers(play, seen):
    """Which hosts of `play` (in play order) install, given the hosts whose probes each one saw."""
    return [host for host, earlier in _per_host("__deps_earlier_sharers", play, seen).items() if earlier == []]


def test_the_probes_go_beside_the_venv_and_the_source():
    with open(os.path.join(ROLES, "kvcache", "defaults", "main.yml"), encoding="utf-8") as stream:
        venv = yaml.safe_load(stream)["kvcache_venv"]
    prefixes = _template("__deps_probe_prefixes", deps_src_dir=os.path.dirname(venv) + "/src")
    assert {os.path.dirname(path) for path in prefixes.values()} == {os.path.dirname(venv)}
    assert len(set(prefixes.values())) == 2  # one probe for each, even in one directory
    prefixes = _template("__deps_probe_prefixes", deps_venv="/nfs/a/venv/", deps_src_dir="/local/src")
    assert (os.path.dirname(prefixes["venv"]), os.path.dirname(prefixes["src"])) == ("/nfs/a", "/local")


def test_a_host_counts_the_probes_of_this_play_hosts_only():
    prefix = _template("__deps_probe_prefixes")["venv"]
    found = {"files": [{"path": prefix + name} for name in ("h2", "h1", "not-in-play")],
             "item": {"key": "venv", "value": prefix}}  # fmt: skip
    assert _template("__deps_probe_hosts_seen", item=found, ansible_play_batch=["h1", "h2"]) == ["h1", "h2"]


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


def test_hosts_that_share_the_source_but_not_the_venv_are_named():
    # a and b build in one source directory into venvs of their own; c shares both with a.
    seen = {"a": {"venv": ["a", "c"], "src": ["a", "b", "c"]}, "b": {"venv": ["b"], "src": ["a", "b"]},
            "c": {"venv": ["a", "c"], "src": ["a", "c"]}}  # fmt: skip
    assert _per_host("__deps_src_only_sharers", ["a", "b", "c"], seen) == {"a": ["b"], "b": ["a"], "c": []}
    # A venv shared, each source of its own (the installer builds in its own): nothing to refuse.
    seen = {"a": {"venv": ["a", "b"], "src": ["a"]}, "b": {"venv": ["a", "b"], "src": ["b"]}}
    assert _per_host("__deps_src_only_sharers", ["a", "b"], seen) == {"a": [], "b": []}
