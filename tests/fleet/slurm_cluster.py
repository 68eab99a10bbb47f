"""A real Slurm cluster on the namespace fleet (tests/fleet/fleet.py): munged and slurmctld in the root namespace,
one slurmd per fleet host in that host's network namespace, with its own hostname and the same private cache and
results directories a login to the host sees. Everything lives under <fleet workdir>/slurm/ and uses ports of its
own, so a Slurm of the machine's is never touched.

The recipe and its pitfalls are those of Debian 12's slurm-wlm 22.05 with munge and PMIx:
- `ip netns exec` remounts /sys, and slurmd then finds no cgroup filesystem: slurmd enters the namespace with
  `nsenter --net` instead;
- the nodes share /tmp, where PMIx makes per-job directories: TmpFS is a directory per node;
- two ranks on one node share Open MPI's shared-memory files when the nodes share a hostname: every slurmd
  runs under `unshare --uts` with its node's name.
Teardown: slurmds, then slurmctld, then munged, by PID, with bounded waits; then the directory.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

PARTITION = "kvfleet"
CONTROLLER_PORT = 16817  # not Slurm's 6817/6818: a Slurm of the machine's keeps its ports
NODE_PORT = 16818
CPUS_PER_NODE = 2  # two tasks per node; config_overrides lets a machine with fewer cores still offer them
NODE_MEMORY_MB = 1024
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
SLURMD = "/usr/sbin/slurmd"
SLURMCTLD = "/usr/sbin/slurmctld"
MUNGED = "/usr/sbin/munged"
COMMANDS = (SLURMD, SLURMCTLD, MUNGED, "/usr/sbin/mungekey", "/usr/bin/srun", "/usr/bin/sinfo")


def missing():
    """What this machine lacks to run the cluster (empty when nothing): root, Slurm's and munge's programs."""
    lacks = [] if os.geteuid() == 0 else ["root"]
    return lacks + [path for path in COMMANDS + ("/usr/bin/nsenter", "/usr/bin/unshare") if not os.path.exists(path)]


def _run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30, **kwargs)


class SlurmCluster:
    """up() starts the daemons on the fleet's hosts, down() stops them; `env` is what a client needs."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.dir = os.path.join(fleet.workdir, "slurm")
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.munge_socket = os.path.join(self.dir, "munge", "munge.socket")
        self.partition = PARTITION
        self.nodes = list(fleet.names)
        self._processes = {}  # name -> Popen of the daemons this object started, stopped in down()

    @property
    def env(self):
        return {"SLURM_CONF": self.conf}

    def _path(self, *parts):
        return os.path.join(self.dir, *parts)

    # -- bring up ----------------------------------------------------------------------------
    def up(self):
        try:
            for sub in ("munge", "state", "spool", "log", "tmp", "pid"):
                os.makedirs(self._path(sub), exist_ok=True)
            for node in self.nodes:
                os.makedirs(self._path("tmp", node), exist_ok=True)  # TmpFS=<dir>/tmp/%n
            self._munge()
            self._write_conf()
            self._start("slurmctld", [SLURMCTLD, "-D", "-f", self.conf])
            for index, node in enumerate(self.nodes):
                self._start_node(index, node)
            self._wait_until_idle()
        except BaseException:
            self.down()
            raise
        return self

    def _munge(self):
        key = self._path("munge", "munge.key")
        made = _run(["/usr/sbin/mungekey", "--create", "--keyfile", key, "--force"])
        if made.returncode != 0:
            raise RuntimeError(f"mungekey failed: {made.stderr.strip()}")
        os.chmod(key, 0o600)
        os.chmod(self._path("munge"), 0o755)  # clients reach the socket through it
        argv = [
            MUNGED, "--foreground", "--force", "--key-file", key, "--socket", self.munge_socket,
            "--pid-file", self._path("munge", "munged.pid"), "--log-file", self._path("log", "munged.log"),
            "--seed-file", self._path("munge", "munged.seed"),
        ]  # fmt: skip
        self._start("munged", argv)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            credential = _run(["munge", "-S", self.munge_socket, "-n"])
            decoded = _run(["unmunge", "-S", self.munge_socket], input=credential.stdout)
            if credential.returncode == 0 and decoded.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"munged did not answer on {self.munge_socket}: {self._log_tail('munged.log')}")

    def _write_conf(self):
        lines = [
            "ClusterName=kvfleet",
            # The controller listens on the fleet's bridge, in the root namespace.
            f"SlurmctldHost={socket.gethostname().split('.')[0]}({self.fleet.bridge_address})",
            f"SlurmctldPort={CONTROLLER_PORT}",
            f"SlurmdPort={NODE_PORT}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            "MpiDefault=pmix",
            # The configured CPUs and memory, not the machine's: every node offers two tasks.
            "SlurmdParameters=config_overrides",
            f"StateSaveLocation={self._path('state')}",
            f"SlurmdSpoolDir={self._path('spool', '%n')}",
            f"SlurmctldPidFile={self._path('pid', 'slurmctld.pid')}",
            f"SlurmdPidFile={self._path('pid', 'slurmd-%n.pid')}",
            f"SlurmctldLogFile={self._path('log', 'slurmctld.log')}",
            f"SlurmdLogFile={self._path('log', 'slurmd-%n.log')}",
            f"TmpFS={self._path('tmp', '%n')}",
        ]
        for node, address in zip(self.nodes, self.fleet.addresses):
            lines.append(
                f"NodeName={node} NodeAddr={address} CPUs={CPUS_PER_NODE} RealMemory={NODE_MEMORY_MB} State=UNKNOWN"
            )
        lines.append(f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        with open(self.conf, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def _start_node(self, index, node):
        # The host's own view, as its sshd has it: hostname, then the private cache and results directories.
        inner = 'hostname "$1" && mount --bind "$2" "$3" && mount --bind "$4" "$5" && exec "$6" -D -N "$1" -f "$7"'
        argv = [
            "nsenter", f"--net=/run/netns/{node}", "unshare", "--uts", "--mount", "--propagation", "private",
            "sh", "-c", inner, "sh", node, self.fleet.private_cache(index), self.fleet.shared_cache,
            self.fleet.private_results(index), self.fleet.shared_results, SLURMD, self.conf,
        ]  # fmt: skip
        self._start(f"slurmd-{node}", argv)

    def _start(self, name, argv):
        with open(self._path("log", f"{name}.out"), "w", encoding="utf-8") as log:
            self._processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=self._daemon_env()
            )

    def _daemon_env(self):
        env = dict(os.environ)
        env.update(self.env)
        return env

    def _wait_until_idle(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        states = ""
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}): {self._log_tail(name + '.out')}")
            shown = _run(["sinfo", "--noheader", "--Node", "--format=%N %t"], env=self._daemon_env())
            states = shown.stdout.strip()
            rows = dict(line.split() for line in states.splitlines() if len(line.split()) == 2)
            if sorted(rows) == sorted(self.nodes) and all(state == "idle" for state in rows.values()):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"the Slurm nodes did not become idle within {READY_TIMEOUT_S:.0f} s (sinfo: {states or 'no answer'}); "
            f"slurmctld: {self._log_tail('slurmctld.log')}"
        )

    def _log_tail(self, name, lines=8):
        try:
            with open(self._path("log", name), encoding="utf-8", errors="replace") as handle:
                return " / ".join(handle.read().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- tear down ---------------------------------------------------------------------------
    def down(self):
        """slurmds, slurmctld, munged, in that order; then the directory. Never raises for what is gone."""
        order = [f"slurmd-{node}" for node in self.nodes] + ["slurmctld", "munged"]
        for name in order:
            process = self._processes.pop(name, None)
            if process is not None:
                _stop(process)
        # Daemons of an earlier process (fleet.py down from another command): found by their pid files.
        for pid_file in self._pid_files():
            _stop_pid(pid_file, self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pid_files(self):
        files = [self._path("pid", f"slurmd-{node}.pid") for node in self.nodes]
        return files + [self._path("pid", "slurmctld.pid"), self._path("munge", "munged.pid")]


def _stop(process):
    """SIGTERM to the daemon's session (the sh that execs it, its step daemons), then SIGKILL; bounded."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _stop_pid(pid_file, marker):
    """The daemon a pid file names, only while its command line still names our directory (a pid is reused)."""
    try:
        with open(pid_file, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if marker.encode() not in handle.read():
                return
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _running(pid):
                return
            time.sleep(0.1)


def _running(pid):
    """Still running: neither gone nor a zombie (one this process started and has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
