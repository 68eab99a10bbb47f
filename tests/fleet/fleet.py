#!/usr/bin/env python
"""A fleet of fake hosts on one machine: network namespaces, each with its own hostname, address,
sshd, and a private cache directory and a private results directory, each mounted at one shared path
(so a file written on one host is never visible on another, as on real machines).

Network hygiene (mandatory): before anything is created, an `unreachable` route for the whole
test subnet goes into the root namespace, so no packet for a test address can ever leave through
the machine's real interface; it is removed last. Teardown order: ssh ControlPersist masters,
then every process in each namespace, then the namespaces and veths, then the bridge, then the
route. Every wait is bounded. Needs root.

    python tests/fleet/fleet.py up --hosts 3 --workdir /var/tmp/kvcache-fleet
    python tests/fleet/fleet.py down --workdir /var/tmp/kvcache-fleet
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from slurm_cluster import SlurmCluster

SUBNET = "10.77.0.0/16"  # the safety route covers this whole range
PREFIX = "10.77.0"  # hosts are PREFIX.11, .12, ...; the bridge (controller side) is PREFIX.1
BRIDGE = "kvfleet-br0"
NAME = "kvfleet{}"  # namespace and hostname of host i
SHARED_CACHE = "/var/tmp/kvcache-fleet-cache"  # the same path on every host, privately mounted
SHARED_RESULTS = "/var/tmp/storagebench-kvcache-results"  # the run role's run_work_dir, privately mounted too
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
SSHD = "/usr/sbin/sshd"


def run(argv, check=True, **kwargs):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


def host_address(index):
    return f"{PREFIX}.{11 + index}"


class Fleet:
    """Bring hosts up with up(), take everything down with down(); state lives in workdir/state.json."""

    # What a daemon started on a host beside sshd needs to see the host as a login does (slurm_cluster.py).
    bridge_address = f"{PREFIX}.1"
    shared_cache = SHARED_CACHE
    shared_results = SHARED_RESULTS

    def __init__(self, workdir, count=3):
        self.workdir = os.path.abspath(workdir)
        self.count = count
        self.names = [NAME.format(i) for i in range(count)]
        self.addresses = [host_address(i) for i in range(count)]
        self.ssh_config = os.path.join(self.workdir, "ssh_config")
        self.inventory = os.path.join(self.workdir, "hosts.ini")
        self.key = os.path.join(self.workdir, "id_ed25519")
        self.control_dir = os.path.join(self.workdir, "cp")
        self._daemons = []  # sshd launchers started by this process, reaped in down()
        self.slurm = None  # the SlurmCluster up(slurm=True) started

    # -- paths -------------------------------------------------------------------------------
    def private_cache(self, index):
        return os.path.join(self.workdir, "hosts", self.names[index], "cache")

    def private_results(self, index):
        return os.path.join(self.workdir, "hosts", self.names[index], "results")

    def private_cache_files(self, index):
        """Every file under host `index`'s private cache directory (empty once a run cleaned up)."""
        found = []
        for root, _dirs, files in os.walk(self.private_cache(index)):
            found += [os.path.join(root, name) for name in files]
        return found

    def _state_path(self):
        return os.path.join(self.workdir, "state.json")

    # -- bring up ----------------------------------------------------------------------------
    def up(self, slurm=False):
        """The hosts, each with sshd; with slurm, a Slurm cluster on them too (slurm_cluster.py)."""
        if os.geteuid() != 0:
            raise PermissionError("the fleet needs root (network namespaces, mounts, sshd)")
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.control_dir, exist_ok=True)
        self._write_state(created_results_mount=False)
        # The safety route first: nothing for the test subnet may ever leave the machine.
        add = run(["ip", "route", "add", "unreachable", SUBNET], check=False)
        if add.returncode != 0 and "File exists" not in add.stderr:
            raise RuntimeError(f"cannot add the safety route: {add.stderr.strip()}")
        try:
            self._keys()
            self._bridge()
            os.makedirs(SHARED_CACHE, exist_ok=True)
            if not os.path.isdir(SHARED_RESULTS):
                # Recorded before it is made, so that down() (perhaps another process) removes it.
                self._write_state(created_results_mount=True)
                os.makedirs(SHARED_RESULTS)
            os.makedirs("/run/sshd", exist_ok=True)
            for index in range(self.count):
                self._host(index)
            self._write_client_files()
            self._wait_for_sshd()
            if slurm:
                self._write_state(created_results_mount=self._read_state().get("created_results_mount"), slurm=True)
                self.slurm = SlurmCluster(self).up()
        except BaseException:
            self.down()
            raise
        return self

    def _write_state(self, created_results_mount, slurm=False):
        with open(self._state_path(), "w", encoding="utf-8") as handle:
            json.dump({"count": self.count, "created_results_mount": created_results_mount, "slurm": slurm}, handle)

    def _read_state(self):
        try:
            with open(self._state_path(), encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def _keys(self):
        if not os.path.exists(self.key):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvcache-fleet", "-f", self.key])
        shutil.copyfile(self.key + ".pub", os.path.join(self.workdir, "authorized_keys"))
        os.makedirs(os.path.join(self.workdir, "hostkeys"), exist_ok=True)

    def _bridge(self):
        if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
            run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "replace", f"{PREFIX}.1/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])

    def _host(self, index):
        name, address = self.names[index], self.addresses[index]
        outside = f"{name}-br"
        run(["ip", "netns", "add", name])
        run(["ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", name])
        run(["ip", "link", "set", outside, "master", BRIDGE])
        run(["ip", "link", "set", outside, "up"])
        run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        run(["ip", "-n", name, "link", "set", "eth0", "up"])
        # An on-link default route, or Ansible's ansible_default_ipv4 comes back empty.
        run(["ip", "-n", name, "route", "add", "default", "dev", "eth0"])
        host_key = os.path.join(self.workdir, "hostkeys", name)
        if not os.path.exists(host_key):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key])
        os.makedirs(self.private_cache(index), exist_ok=True)
        os.makedirs(self.private_results(index), exist_ok=True)
        config = os.path.join(self.workdir, f"sshd_{name}.conf")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(
                "\n".join(
                    [
                        f"ListenAddress {address}",
                        f"HostKey {host_key}",
                        f"AuthorizedKeysFile {self.workdir}/authorized_keys",
                        "PidFile none",
                        "PermitRootLogin prohibit-password",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "StrictModes no",
                        "UsePAM no",
                        "PrintMotd no",
                        "MaxStartups 100",
                        "MaxSessions 100",
                        f"Subsystem sftp {SFTP_SERVER}",
                        "",
                    ]
                )
            )
        # Own hostname (UTS) and own mount namespace: the private cache and results directories appear at the
        # shared paths.
        inner = f'hostname "$1" && mount --bind "$2" "$3" && mount --bind "$5" "$6" && exec {SSHD} -D -e -f "$4"'
        log = open(os.path.join(self.workdir, f"sshd_{name}.log"), "w", encoding="utf-8")  # noqa: SIM115
        self._daemons.append(
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    name,
                    "unshare",
                    "--uts",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    inner,
                    "sh",
                    name,
                    self.private_cache(index),
                    SHARED_CACHE,
                    config,
                    self.private_results(index),
                    SHARED_RESULTS,
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        log.close()

    def _write_client_files(self):
        hosts = " ".join(self.names + self.addresses)
        lines = []
        for name, address in zip(self.names, self.addresses):
            lines += [f"Host {name}", f"  HostName {address}"]
        lines += [
            f"Host {hosts}",
            "  User root",
            f"  IdentityFile {self.key}",
            "  IdentitiesOnly yes",
            "  StrictHostKeyChecking no",
            "  UserKnownHostsFile /dev/null",
            "  LogLevel ERROR",
            "  ConnectTimeout 5",
            "  BatchMode yes",
            "",
        ]
        with open(self.ssh_config, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))
        with open(self.inventory, "w", encoding="utf-8") as handle:
            handle.write("[kvcache]\n")
            for name, address in zip(self.names, self.addresses):
                handle.write(f"{name} ansible_host={address}\n")
            handle.write(
                "\n[kvcache:vars]\nansible_user=root\n"
                f"ansible_ssh_common_args=-F {self.ssh_config}\n"
                "ansible_python_interpreter=/usr/bin/python3\n"
            )

    def _wait_for_sshd(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        pending = set(range(self.count))
        while pending and time.monotonic() < deadline:
            for index in sorted(pending):
                listening = run(
                    ["ip", "netns", "exec", self.names[index], "ss", "-Hltn", "sport", "= :22"], check=False
                ).stdout
                if self.addresses[index] in listening:
                    pending.discard(index)
            time.sleep(0.1)
        if pending:
            logs = {
                self.names[i]: open(os.path.join(self.workdir, f"sshd_{self.names[i]}.log"), encoding="utf-8").read()
                for i in pending
            }
            raise RuntimeError(f"sshd did not start on {sorted(logs)}: {logs}")

    def ssh(self, index, *command, timeout=60):
        return run(["ssh", "-F", self.ssh_config, self.names[index], *command], check=False, timeout=timeout)

    # -- tear down ---------------------------------------------------------------------------
    def down(self):
        """Safe order; never raises for what is already gone; bounded waits."""
        # Slurm's daemons first (slurmds, slurmctld, munged), whoever started them: the state says whether.
        if self.slurm is not None or self._read_state().get("slurm"):
            (self.slurm or SlurmCluster(self)).down()
            self.slurm = None
        for socket_path in glob.glob(os.path.join(self.control_dir, "*")):
            run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "fleet-control"], check=False, timeout=10)
        for name in self.names:
            self._kill_namespace_processes(name)
        for daemon in self._daemons:
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=5)
        self._daemons.clear()
        for name in self.names:
            run(["ip", "netns", "delete", name], check=False)
            run(["ip", "link", "delete", f"{name}-br"], check=False)
        run(["ip", "link", "delete", BRIDGE], check=False)
        run(["ip", "route", "del", "unreachable", SUBNET], check=False)
        if os.path.isdir(SHARED_CACHE) and not os.listdir(SHARED_CACHE):
            os.rmdir(SHARED_CACHE)
        # The results mount point only if up() made it (the machine may use that path itself) and it is empty.
        if self._read_state().get("created_results_mount") and os.path.isdir(SHARED_RESULTS):
            if not os.listdir(SHARED_RESULTS):
                os.rmdir(SHARED_RESULTS)

    @staticmethod
    def _kill_namespace_processes(name):
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(int(pid), sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and run(["ip", "netns", "pids", name], check=False).stdout.strip():
                time.sleep(0.1)


def namespaces_left():
    """Namespaces of ours still present (for tests asserting a clean teardown)."""
    listing = run(["ip", "netns", "list"], check=False).stdout.split("\n")
    return [line.split()[0] for line in listing if line.startswith(NAME.format(""))]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Bring a fleet of network-namespace hosts up or down.")
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3)")
    parser.add_argument("--workdir", default="/var/tmp/kvcache-fleet", help="keys, configs, inventory, state")
    parser.add_argument("--slurm", action="store_true", help="up: also a Slurm cluster on the hosts (root, slurm-wlm)")
    args = parser.parse_args(argv)
    if args.hosts < 1 or args.hosts > 50:
        parser.error("--hosts: must be between 1 and 50")
    count = args.hosts
    state = os.path.join(args.workdir, "state.json")
    if args.action == "down" and os.path.exists(state):
        with open(state, encoding="utf-8") as handle:
            count = json.load(handle)["count"]
    fleet = Fleet(args.workdir, count)
    if args.action == "up":
        fleet.up(slurm=args.slurm)
        slurm = f"; Slurm: SLURM_CONF={fleet.slurm.conf}, partition {fleet.slurm.partition}" if fleet.slurm else ""
        print(f"{count} hosts up; inventory {fleet.inventory}; ssh config {fleet.ssh_config}{slurm}")
    else:
        fleet.down()
        print("fleet down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
