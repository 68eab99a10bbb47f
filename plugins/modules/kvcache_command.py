#!/usr/bin/python
# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)

DOCUMENTATION = r"""
---
module: kvcache_command
short_description: Build the kvcache engine's command line and its MPI or Slurm prefix
version_added: "0.1.0"
description:
  - Builds the argv that runs the storagebench kvcache engine (C(python -m kvcache run),
    C(python -m kvcache datasize), the fio baseline of a cache dir C(python -m kvcache baseline) or the MLPerf Storage
    submission run C(python -m kvcache mlperf run)), locally,
    in a container, or under C(mpirun)/C(mpiexec) across 1 to 10,000 hosts with Open MPI or MPICH (Hydra).
  - It never runs the benchmark. Run the returned RV(argv) with M(ansible.builtin.command) and C(argv:),
    never as a shell string.
  - The engine is asked for its option contract with C(PYTHON -m kvcache describe) (every option's flag, type,
    choices and bounds, and the models); if that interpreter is missing where the module runs, the module imports
    C(kvcache.describe) in its own interpreter instead.
  - The engine options below and every key and value of O(extra_args) are checked against that contract before
    anything is built, as the engine checks a config file; a message starts with the option's name.
  - With O(exec_type=mpi) and a non-empty O(hosts), the argv starts with an MPI prefix. Long host lists
    (more than 64 hosts, or a command line longer than 32 KiB) go to a hostfile, which the module writes
    where it runs (the launch host).
  - With O(exec_type=slurm), the argv starts with an C(srun) prefix built from the same O(hosts),
    O(num_processes) and O(processes_per_host), each flag one argv element (C(--nodes=3)). With O(slurm_batch=true)
    the module also returns an sbatch script (RV(sbatch_script)) and writes it to O(sbatch_script_path) when given.
author:
  - storagebench developers (!UNKNOWN)
options:
  command:
    description:
      - The engine subcommand.
      - V(mlperf run) runs the MLPerf Storage KV-cache options x trials and writes the submission's results tree
        under O(results_dir) on rank 0's host. Its own options (C(category), C(option), C(trials), C(delay),
        C(organization), C(system_name), C(what_if), C(json)) go in O(extra_args), checked against the contract
        like any other; in the CLOSED category the engine itself refuses a workload option (exit 2, naming it).
      - V(mlperf run) takes no O(output) (the results tree replaces it); the contract's message says so.
      - "V(baseline) runs fio on O(cache_dir) at the engine's chunk size and concurrency and writes its JSON to
        O(output), on the host where it runs (run it with O(exec_type=local) on every host); C(kvcache run
        --baseline FILE), given in O(extra_args) as V({baseline: FILE}), states the run's bandwidth as a share of it."
    type: str
    choices: [run, datasize, baseline, mlperf run]
    default: run
  model:
    description:
      - Model whose KV-cache geometry sets the bytes per token (engine C(--model)).
      - One of the engine's models (C(python -m kvcache describe) lists them), unless O(config) is set
        (a config file may define more).
      - When omitted the engine uses its own default, as for every engine option here.
    type: str
  num_users:
    description: Simulated users, per rank under MPI (engine C(--num-users)), within the engine's bounds.
    type: int
  duration:
    description: Measurement window in seconds (engine C(--duration), C(run) only), within the engine's bounds.
    type: float
  seed:
    description: Random seed; rank N uses seed + N (engine C(--seed), C(run) only).
    type: int
  gpu_mem_gb:
    description: GPU tier budget in GiB, 0 disables the tier (engine C(--gpu-mem-gb)).
    type: float
  cpu_mem_gb:
    description: CPU (host memory) tier budget in GiB, 0 disables the tier (engine C(--cpu-mem-gb)).
    type: float
  cache_dir:
    description:
      - Directory on the storage under test (engine C(--cache-dir), C(run), C(mlperf run) and C(baseline)).
      - Must be absolute, since every rank resolves it on its own host.
      - Required with O(exec_type=container) and O(command=run), O(command=baseline) or O(command=mlperf run); it is
        mounted at the same path.
    type: str
  generation_mode:
    description:
      - Decode time per generated token (engine C(--generation-mode), C(run) only).
      - One of V(none), V(fast), V(realistic).
    type: str
  performance_profile:
    description:
      - Whether users think between requests and the SLA verdict applies (engine C(--performance-profile), C(run) only).
      - One of V(latency), V(throughput).
    type: str
  output:
    description: Where rank 0 writes the result JSON, or C(baseline) its JSON (engine C(--output), C(run), C(baseline)).
    type: str
  results_dir:
    description:
      - The directory of the MLPerf results tree, which rank 0 writes on its host (engine C(--results-dir),
        C(mlperf run) only; required by the engine there).
      - Must be absolute. With O(exec_type=container) it is required and mounted at the same path (give a directory
        that exists, since C(podman) does not create a missing one).
    type: str
  config:
    description: A YAML file of engine options and user-defined models (engine C(--config)).
    type: str
  extra_args:
    description:
      - "Any other engine option, by its name without dashes (underscores become dashes),
        for example V({io_chunk_mib: 8, keep_cache: true}), or kv-cache.py's V({user_loop: open, enable_rag: true,
        num_gpus: 2, tensor_parallel: 2})."
      - A flag option (type bool in C(describe)) takes V(true), which adds the bare flag, or V(false), which leaves
        it out; any other option takes a value of its type (an integer, a number, a string), within its bounds and
        choices; V(null) leaves any option out.
      - Values are taken as given, as in an engine config file, with no conversion; V(keep_cache="yes"),
        V(quiet=0) and V(io_chunk_mib="8") are refused.
      - Each key must be an option of O(command) in the engine's C(describe); the module's own options
        (O(model), O(num_users), ...) cannot be given here.
    type: dict
    default: {}
  python:
    description:
      - The Python interpreter, on the hosts that run the engine, that has the engine installed.
      - The default is the virtual environment that the collection's deps role installs.
      - With O(exec_type=container) it is the interpreter inside the image.
    type: str
    default: /opt/storagebench-kvcache/venv/bin/python
  exec_type:
    description:
      - V(local) runs the engine directly; V(mpi) puts an MPI prefix in front of it when O(hosts) is not empty;
        V(container) wraps it in C(docker run) or C(podman run) (no MPI prefix).
      - V(slurm) puts an C(srun) prefix in front of it (C(--nodes), C(--ntasks), C(--ntasks-per-node) when every
        host has the same slots, C(--nodelist), C(--mpi), C(--cpu-bind=none), then O(slurm_partition),
        O(slurm_account), O(slurm_time_limit) and O(slurm_params)); without O(hosts) Slurm picks the nodes.
        O(env) then goes through C(env NAME=value) after the prefix.
    type: str
    choices: [local, mpi, container, slurm]
    default: local
  hosts:
    description:
      - Hosts to launch on with O(exec_type=mpi) or O(exec_type=slurm) (Slurm node names, no IPv6), hostnames or
        IP addresses, each optionally followed by C(:N) slots (IPv6 as C([addr]:N)).
      - Give C(:N) on every host or on none. Duplicates are merged.
    type: list
    elements: str
    default: []
  num_processes:
    description:
      - Total MPI processes (ranks); with O(exec_type=slurm), the Slurm tasks (C(--ntasks)).
      - Defaults to the number of hosts, or O(processes_per_host) times it, or the sum of the C(:N) slots.
      - Bare hosts get C(num_processes // hosts) slots each, plus one for the first C(num_processes % hosts) hosts.
      - More processes than slots is an error unless O(oversubscribe=true). At most 2147483647 (an MPI rank is a C int).
    type: int
  processes_per_host:
    description:
      - Slots on every host (bare hosts only). MPICH also gets C(-ppn); Slurm C(--ntasks-per-node).
    type: int
  mpi_bin:
    description: The launcher, C(mpirun), C(mpiexec) or a path to one.
    type: str
    default: mpirun
  mpi_flavor:
    description:
      - Which command-line dialect the launcher speaks. V(auto) runs C(MPI_BIN --version) where the module runs.
      - V(openmpi) uses C(-n N -host h:N,... --bind-to none --map-by node) (C(--map-by socket) on one host),
        C(-x NAME=value) and C(host slots=N) hostfiles.
      - V(mpich) (MPICH, Intel MPI, MVAPICH; the Hydra launcher) uses C(-n N -hosts h:N,...), C(-f) with C(host:N)
        hostfiles, C(-ppn) and C(-genv NAME value), and none of Open MPI's flags.
    type: str
    choices: [auto, openmpi, mpich]
    default: auto
  oversubscribe:
    description: Allow more processes than slots (Open MPI C(--oversubscribe); MPICH needs no flag).
    type: bool
    default: false
  allow_run_as_root:
    description: Open MPI C(--allow-run-as-root) (MPICH needs no flag).
    type: bool
    default: false
  mpi_params:
    description:
      - Extra launcher arguments, as a list or as a string split like a shell would (no shell ever sees it).
      - Every element is a flag (it starts with C(-)) or a value of the flag before it. The module knows which
        Open MPI and MPICH/Hydra flags take values, and how many (C(--mca NAME VALUE), C(-x NAME=value),
        C(--map-by VALUE), C(-genv NAME VALUE), ...); a flag it does not know takes none, so give its value as
        C(--flag=value). A bare word anywhere else is refused, since the launcher would run it as the program
        instead of the engine; so are C(--), C(:) (a second program), and flags after which the engine would
        not run as built (C(--app), C(-configfile), C(--version), C(--help), C(--do-not-launch)) or whose
        process count the module cannot check (Open MPI C(-N), C(--npernode), C(--ppr); use O(processes_per_host)).
      - They come after the generated ones. A flag the module also generates (C(-n), C(-host), C(--hostfile),
        C(--bind-to), C(--map-by), C(--mca plm_rsh_agent), C(-x NAME), C(-ppn), ...) replaces the generated one
        and is checked as that option is. C(-n N) counts as O(num_processes) (C(-n 0), C(-n abc), or more
        processes than slots without O(oversubscribe), C(--oversubscribe) or C(--map-by ...:OVERSUBSCRIBE) fail),
        C(-ppn N) as O(processes_per_host), C(-host LIST) gives the slots (a bare host is one slot), a
        hostfile flag needs an absolute path, and C(-x)/C(-genv) a valid variable name.
    type: raw
  hostfile:
    description:
      - Absolute path of the hostfile to write where the module runs; when set, a hostfile is always used.
        Its directory must exist.
      - With O(exec_type=slurm) it is the node-list file, one host a line (no marker line), given as
        C(--nodelist=PATH); srun reads the value as a file because it contains a C(/).
      - When not set, a hostfile is used only for long host lists, at
        C(/var/tmp/storagebench-kvcache-hostfiles/hostfile-HASH), HASH being taken from its content
        (a directory of its own, apart from the roles' cache directory C(/var/tmp/storagebench-kvcache)).
        The module creates that directory (mode 0755) when it is missing, and refuses it when it is a
        symlink, not a directory, owned by another user or writable by others; it never changes its mode.
      - Every hostfile the module writes starts with the line C(# written by storagebench.kvcache.kvcache_command),
        a comment to Open MPI and Hydra. An existing file is replaced only when it starts with that line; any
        other file, a directory, a symlink, a FIFO or a device node is refused (the message starts with
        C(hostfile)). The file is written under a temporary name and renamed into place; on a failure nothing
        is left behind.
    type: str
  env:
    description:
      - Environment variables for every rank (Open MPI C(-x NAME=value), MPICH C(-genv NAME value)),
        for the container (C(-e)), or, with O(exec_type=local), set through C(env NAME=value).
    type: dict
    default: {}
  ssh_command:
    description:
      - The ssh command C(mpirun) itself should use to reach the hosts, for example C(ssh -F /path/ssh_config).
      - Open MPI gets C(--mca plm_rsh_agent) (C(plm_ssh_agent) from 5.0); MPICH gets C(-launcher ssh -launcher-exec),
        which takes a single program (use a wrapper script for options).
    type: str
  srun_path:
    description:
      - The C(srun) to launch with for O(exec_type=slurm), a name looked up on C(PATH) or a path, where the module
        runs. The default is C(srun) found on C(PATH).
      - When it cannot be found, the module fails before anything runs.
    type: str
  slurm_mpi:
    description: The Slurm PMI plugin (C(srun --mpi)); V(pmix) is the one Open MPI and mpi4py work with.
    type: str
    default: pmix
  slurm_partition:
    description: The Slurm partition (C(--partition)).
    type: str
  slurm_account:
    description: The Slurm account to charge (C(--account)).
    type: str
  slurm_time_limit:
    description:
      - The time limit (C(--time)), whole minutes or a Slurm time (C(minutes:seconds), C(hours:minutes:seconds),
        C(days-hours), C(days-hours:minutes), C(days-hours:minutes:seconds)).
    type: raw
  slurm_params:
    description:
      - Extra C(srun) arguments, as a list or as a string split like a shell would (no shell ever sees it).
      - Every element is a flag or the value of a known flag before it (C(-p NAME), C(--gres VALUE), ...);
        give any other flag's value as C(--flag=value). A bare word, C(--), C(:), C(--help), C(--version),
        C(--test-only) and C(--multi-prog) are refused.
      - They come after the generated ones. A flag the module also generates (C(--nodes)/C(-N), C(--ntasks)/C(-n),
        C(--ntasks-per-node), C(--nodelist)/C(-w), C(--mpi), C(--cpu-bind), C(--partition)/C(-p),
        C(--account)/C(-A), C(--time)/C(-t)) replaces the generated one; a task count must be a whole number
        and a time a Slurm time.
    type: raw
  slurm_batch:
    description:
      - Also build an sbatch script (RV(sbatch_script)), C(#!/bin/bash), C(#SBATCH) lines for the nodes, tasks,
        node list, partition, account and time, then the srun line. Only with O(exec_type=slurm).
    type: bool
    default: false
  sbatch_script_path:
    description:
      - Absolute path where the module writes the sbatch script (mode 0644) with O(slurm_batch=true).
        Its directory must exist; the module fails when the path exists already. Nothing is written in check mode.
    type: str
  container_engine:
    description: The container runtime for O(exec_type=container).
    type: str
    choices: [docker, podman]
    default: docker
  container_image:
    description: The image that has the engine, for O(exec_type=container).
    type: str
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - The command is built in check mode too; only the hostfile and the sbatch script are not written
        (C(changed) says whether they would be).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - The hostfile is written on the host the module runs on, which must be the host that runs the launcher
    (with O(slurm_batch=true), one that sees the same file as the node that runs the batch script).
  - Every host or parameter ends up as one argv element; RV(cmd) quotes each one,
    so a value with C(;), spaces or C($(...)) never reaches a shell unquoted.
  - Host names are validated and may not start with C(-).
  - Hosts left with no process (more bare hosts than processes) are named in a warning.
seealso:
  - module: ansible.builtin.command
"""

EXAMPLES = r"""
- name: Build the command for 8 ranks on two hosts
  storagebench.kvcache.kvcache_command:
    command: run
    exec_type: mpi
    hosts: [node1, node2]
    num_processes: 8
    model: llama3.1-8b
    num_users: 50
    duration: 300
    cache_dir: /mnt/nvme/kvcache
    output: /var/tmp/kvcache-result.json
    allow_run_as_root: true
    ssh_command: ssh -F /etc/storagebench/ssh_config
  register: kvcache_cmd

- name: Run it
  ansible.builtin.command:
    argv: "{{ kvcache_cmd.argv }}"
  changed_when: false

- name: MPICH with 4 processes on every host of a group, and extra engine flags
  storagebench.kvcache.kvcache_command:
    exec_type: mpi
    mpi_bin: mpiexec
    mpi_flavor: mpich
    hosts: "{{ groups['clients'] }}"
    processes_per_host: 4
    model: mistral-7b
    cache_dir: /mnt/lustre/kvcache
    extra_args:
      io_chunk_mib: 8
      keep_cache: true
    env:
      UCX_TLS: tcp,self

- name: Size the run on one host (no MPI), each rank with 2 GPUs in tensor parallel and RAG documents
  storagebench.kvcache.kvcache_command:
    command: datasize
    model: llama3.1-70b-instruct
    num_users: 100
    extra_args:
      json: true
      num_gpus: 2
      tensor_parallel: 2
      enable_rag: true

- name: The MLPerf Storage CLOSED option 1 across two hosts (3 trials; the rules fix the workload)
  storagebench.kvcache.kvcache_command:
    command: mlperf run
    exec_type: mpi
    hosts: [node1, node2]
    cache_dir: /mnt/nvme/kvcache
    results_dir: /var/tmp/mlperf-results
    extra_args:
      category: closed
      option: "1"
      organization: example-org
      quiet: true

- name: What an OPEN run of every option would run (the plan as JSON), built in check mode as well
  storagebench.kvcache.kvcache_command:
    command: mlperf run
    cache_dir: /mnt/nvme/kvcache
    results_dir: /var/tmp/mlperf-results
    num_users: 20
    duration: 30
    extra_args:
      category: open
      option: all
      trials: 1
      delay: 0
      what_if: true
      json: true

- name: Build the srun command for 3 nodes x 2 tasks in a partition, 30 minutes at most
  storagebench.kvcache.kvcache_command:
    exec_type: slurm
    hosts: [node1, node2, node3]
    processes_per_host: 2
    slurm_partition: storage
    slurm_time_limit: 30
    slurm_params: [--exclusive]
    model: llama3.1-8b
    cache_dir: /mnt/lustre/kvcache
  register: kvcache_srun

- name: Write an sbatch script for the same run (submit it with sbatch)
  storagebench.kvcache.kvcache_command:
    exec_type: slurm
    slurm_batch: true
    sbatch_script_path: /home/bench/kvcache.sbatch
    hosts: [node1, node2, node3]
    processes_per_host: 2
    slurm_account: storage-team
    slurm_time_limit: "0-02:00:00"
    model: llama3.1-8b
    cache_dir: /mnt/lustre/kvcache

- name: The engine in a container
  storagebench.kvcache.kvcache_command:
    exec_type: container
    container_engine: podman
    container_image: registry.example.com/storagebench/kvcache:0.1.0
    python: python3
    model: tiny-1b
    cache_dir: /mnt/nvme/kvcache
"""

RETURN = r"""
argv:
  description: The whole command as a list, launcher prefix included. Give it to M(ansible.builtin.command) as C(argv).
  returned: success
  type: list
  elements: str
  sample: [mpirun, -n, "2", -host, "h1:1,h2:1", --bind-to, none, --map-by, node,
           /opt/storagebench-kvcache/venv/bin/python, -m, kvcache, run, --model, llama3.1-8b]
cmd:
  description: RV(argv) joined with shell quoting (C(shlex.join)), for logs and copy-paste.
  returned: success
  type: str
  sample: >-
    mpirun -n 2 -host h1:1,h2:1 --bind-to none --map-by node
    /opt/storagebench-kvcache/venv/bin/python -m kvcache run
engine_argv:
  description: The engine's own argv, without launcher or container prefix.
  returned: success
  type: list
  elements: str
  sample: [/opt/storagebench-kvcache/venv/bin/python, -m, kvcache, datasize, --model, tiny-1b]
engine_version:
  description: The engine version that C(describe) reported.
  returned: success
  type: str
  sample: 0.1.0
engine_source:
  description:
    - Where the option contract came from. V(python) is C(PYTHON -m kvcache describe) with O(python).
    - V(import) is C(kvcache.describe) imported by the module's own interpreter, used when O(python) could not
      describe the engine. A warning then gives the reason; the options and models checked may differ from
      those of the engine that will run.
  returned: success
  type: str
  choices: [python, import]
  sample: python
mpi_prefix:
  description: The MPI launcher part of RV(argv); empty unless O(exec_type=mpi) with hosts.
  returned: success
  type: list
  elements: str
  sample: [mpirun, -n, "2", -host, "h1:1,h2:1", --bind-to, none, --map-by, node]
slurm_prefix:
  description: The srun part of RV(argv); empty unless O(exec_type=slurm).
  returned: success
  type: list
  elements: str
  sample: [srun, --nodes=2, --ntasks=4, --ntasks-per-node=2, "--nodelist=h1,h2", --mpi=pmix, --cpu-bind=none]
sbatch_script:
  description: The sbatch script, with the srun line as RV(cmd); null unless O(slurm_batch=true).
  returned: success
  type: str
  sample: "#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --ntasks=4\nsrun --nodes=2 --ntasks=4 ...\n"
mpi_flavor:
  description: The launcher dialect used (V(openmpi) or V(mpich)); null without an MPI prefix.
  returned: success
  type: str
  sample: openmpi
num_processes:
  description: The number of engine processes (ranks, Slurm tasks) the command starts; 1 without a prefix.
  returned: success
  type: int
  sample: 2
slots:
  description: Process slots per host, in launch order; empty without an MPI prefix or Slurm hosts.
  returned: success
  type: dict
  sample: {"h1": 1, "h2": 1}
hostfile:
  description: The hostfile the prefix uses, or null when the hosts are on the command line.
  returned: success
  type: dict
  contains:
    path:
      description: Where it is (written where the module ran).
      type: str
      sample: /var/tmp/storagebench-kvcache-hostfiles/hostfile-0f3c2a9d41b7e655
    content:
      description: Its content, the marker line, then one host a line (with O(exec_type=slurm), only the hosts).
      type: str
      sample: "# written by storagebench.kvcache.kvcache_command\nh1 slots=1\nh2 slots=1\n"
"""

import os  # noqa: E402
import shlex  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402
from ansible_collections.storagebench.kvcache.plugins.module_utils.engine_command import (  # noqa: E402
    COMMANDS,
    CONTAINER_ENGINES,
    ENGINE_OPTIONS,
    build_engine_argv,
    with_env,
    wrap_in_container,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.host_probe import parse_mpi_version  # noqa: E402
from ansible_collections.storagebench.kvcache.plugins.module_utils.hostfile_writer import write_hostfile  # noqa: E402
from ansible_collections.storagebench.kvcache.plugins.module_utils.kvcache_common import (  # noqa: E402
    DEFAULT_PYTHON,
    OptionError,
    check_no_nul,
    quote,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.mpi_launch import (  # noqa: E402
    DEFAULT_HOSTFILE_DIR,
    FLAVORS,
    build_mpi_prefix,
    check_mpi_bin,
)
from ansible_collections.storagebench.kvcache.plugins.module_utils.option_contract import parse_describe  # noqa: E402
from ansible_collections.storagebench.kvcache.plugins.module_utils.slurm_launch import (  # noqa: E402
    DEFAULT_SLURM_MPI,
    build_srun_prefix,
    check_srun_path,
    sbatch_script,
)

HOSTFILE_DIR = DEFAULT_HOSTFILE_DIR
# How much of a failed command's output a message quotes.
_OUTPUT_CHARS = 100


def describe_engine(module, python):
    """(the engine's option contract, where it came from): `PYTHON -m kvcache describe` ("python"), else
    `kvcache.describe` imported by the module's own interpreter ("import"), with a warning that says why."""
    problems = []
    try:
        rc, out, err = module.run_command(
            [python, "-m", "kvcache", "describe"], handle_exceptions=False, expand_user_and_vars=False
        )
    except OSError as exc:
        problems.append(f"{quote(python)} -m kvcache describe: {to_native(exc)[:_OUTPUT_CHARS]}")
    else:
        if rc == 0:
            try:
                return parse_describe(out), "python"
            except ValueError as exc:
                reason = to_native(exc)[:_OUTPUT_CHARS]
                problems.append(f"{quote(python)} -m kvcache describe printed no valid description ({reason})")
        else:
            problems.append(f"{quote(python)} -m kvcache describe exited {rc}: {(err or out).strip()[-_OUTPUT_CHARS:]}")
    try:
        from kvcache.describe import describe  # pylint: disable=import-outside-toplevel

        description = parse_describe(describe())
    except (ImportError, ValueError, TypeError) as exc:
        problems.append(f"importing kvcache.describe here failed: {to_native(exc)[:_OUTPUT_CHARS]}")
    else:
        # The contract then is the one of the engine beside the module, which may differ from PYTHON's: say so.
        module.warn(
            "python: {}; the options and models were checked against kvcache.describe imported by the module's "
            "own Python instead".format("; ".join(problems))
        )
        return description, "import"
    module.fail_json(
        msg="python: cannot ask the engine for its options and models ({}); set python to an interpreter that has the "
        "storagebench kvcache engine installed".format("; ".join(problems)),
        option="python",
    )
    return None, None


def find_srun(module, srun_path):
    """The srun to launch with: a path that must be an executable file, or a name looked up on PATH here."""
    name = srun_path if srun_path is not None else "srun"
    try:
        check_srun_path(name)
    except OptionError as exc:
        module.fail_json(msg=to_native(exc), option=exc.option)
    if "/" in name:
        found = os.path.isfile(name) and os.access(name, os.X_OK)
        cause = f"{quote(name)} is not an executable file"
    else:
        found = module.get_bin_path(name) is not None
        cause = f"{quote(name)} is not on PATH ({quote(os.environ.get('PATH', ''), 200)})"
    if not found:
        module.fail_json(
            msg=f"srun_path: exec_type=slurm needs srun where the module runs, and {cause}; "
            "install Slurm's client or set srun_path",
            option="srun_path",
        )
    return name


def write_sbatch_script(path, content, check_mode):
    """Write the script at `path` (mode 0644), which must not exist; returns True (it changed, or would)."""
    if not str(path).startswith("/"):
        raise OptionError("sbatch_script_path", f"must be an absolute path, got {quote(path, 160)}")
    directory = os.path.dirname(path) or "/"
    if not os.path.isdir(directory):
        raise OptionError("sbatch_script_path", f"the directory {quote(directory, 160)} does not exist")
    if os.path.lexists(path):
        raise OptionError("sbatch_script_path", f"{quote(path, 160)} exists already; remove it or choose another path")
    if check_mode:
        return True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise OptionError("sbatch_script_path", f"cannot create {quote(path, 160)}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)  # the umask must not decide who can read it
            handle.write(content)
    except OSError as exc:
        os.unlink(path)
        raise OptionError("sbatch_script_path", f"cannot write {quote(path, 160)}: {exc.strerror}") from None
    return True


def resolve_flavor(module, mpi_bin, requested):
    """(flavor, (major, minor) or None); with auto, read from `MPI_BIN --version` where the module runs."""
    if requested != "auto":
        return requested, None
    try:
        rc, out, err = module.run_command([mpi_bin, "--version"], handle_exceptions=False, expand_user_and_vars=False)
    except OSError as exc:
        rc, out, err = None, "", to_native(exc)
    if rc is None:
        module.fail_json(
            msg=f"mpi_flavor: auto cannot run {quote(mpi_bin)} --version here ({err[:_OUTPUT_CHARS]}); "
            "set mpi_flavor to openmpi or mpich",
            option="mpi_flavor",
        )
    probe = parse_mpi_version(f"{out}\n{err}")  # the host probe's reading, the same as kvcache_cluster_info's
    flavor, version = probe["flavor"], probe["version_tuple"]
    if flavor is None:
        module.fail_json(
            msg=f"mpi_flavor: auto cannot tell the MPI from {quote(mpi_bin)} --version "
            f"(exit {rc}: {(out or err).strip()[:_OUTPUT_CHARS]}); "
            "set mpi_flavor to openmpi or mpich",
            option="mpi_flavor",
        )
    return flavor, version


def main():
    argument_spec = dict(
        command=dict(type="str", choices=list(COMMANDS), default="run"),
        model=dict(type="str"),
        num_users=dict(type="int"),
        duration=dict(type="float"),
        seed=dict(type="int"),
        gpu_mem_gb=dict(type="float"),
        cpu_mem_gb=dict(type="float"),
        cache_dir=dict(type="str"),
        generation_mode=dict(type="str"),
        performance_profile=dict(type="str"),
        output=dict(type="str"),
        results_dir=dict(type="str"),
        config=dict(type="str"),
        extra_args=dict(type="dict", default={}),
        python=dict(type="str", default=DEFAULT_PYTHON),
        exec_type=dict(type="str", choices=["local", "mpi", "container", "slurm"], default="local"),
        hosts=dict(type="list", elements="str", default=[]),
        num_processes=dict(type="int"),
        processes_per_host=dict(type="int"),
        mpi_bin=dict(type="str", default="mpirun"),
        mpi_flavor=dict(type="str", choices=["auto"] + list(FLAVORS), default="auto"),
        oversubscribe=dict(type="bool", default=False),
        allow_run_as_root=dict(type="bool", default=False),
        mpi_params=dict(type="raw"),
        hostfile=dict(type="str"),
        env=dict(type="dict", default={}),
        ssh_command=dict(type="str"),
        srun_path=dict(type="str"),
        slurm_mpi=dict(type="str", default=DEFAULT_SLURM_MPI),
        slurm_partition=dict(type="str"),
        slurm_account=dict(type="str"),
        slurm_time_limit=dict(type="raw"),
        slurm_params=dict(type="raw"),
        slurm_batch=dict(type="bool", default=False),
        sbatch_script_path=dict(type="str"),
        container_engine=dict(type="str", choices=list(CONTAINER_ENGINES), default="docker"),
        container_image=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("exec_type", "container", ("container_image",))],
    )
    params = module.params
    try:
        check_no_nul(params)
    except OptionError as exc:
        module.fail_json(msg=to_native(exc), option=exc.option)
    srun = find_srun(module, params["srun_path"]) if params["exec_type"] == "slurm" else None  # before anything runs

    description, engine_source = describe_engine(module, params["python"])
    try:
        argv, engine_argv, launch, warnings = build_command(module, description, srun)
        script = None
        if srun is not None and params["slurm_batch"]:
            script = sbatch_script(launch["sbatch"], argv)
        changed = False
        if launch is not None and launch["hostfile"] is not None:
            # Last, once every other check has passed: invalid input never leaves a file behind.
            changed = write_hostfile(
                launch["hostfile"]["path"],
                launch["hostfile"]["content"],
                check_mode=module.check_mode,
                private_directory=params["hostfile"] is None,
            )
        if script is not None and params["sbatch_script_path"] is not None:
            changed = write_sbatch_script(params["sbatch_script_path"], script, module.check_mode) or changed
    except OptionError as exc:
        # Invalid input, not a crash: no traceback, a message that starts with the option's name.
        module.fail_json(msg=to_native(exc), option=exc.option)
    else:
        for warning in warnings:
            module.warn(warning)
        result = dict(changed=changed, engine_version=str(description.get("version", "")), engine_source=engine_source)
        result.update(argv=argv, cmd=shlex.join(argv), engine_argv=engine_argv)
        result.update(mpi_prefix=[], slurm_prefix=[], sbatch_script=script)
        result.update(mpi_flavor=None, num_processes=1, slots={}, hostfile=None)
        if launch is not None:
            result.update(
                mpi_flavor=launch.get("flavor"),
                num_processes=launch["num_processes"],
                slots=dict(launch["slots"]),
                hostfile=launch["hostfile"],
            )
            result["slurm_prefix" if srun is not None else "mpi_prefix"] = launch["prefix"]
        module.exit_json(**result)


def build_command(module, description, srun=None):
    """(argv, engine_argv, MPI or Slurm launch or None, warnings); OptionError on invalid input."""
    params = module.params
    exec_type = params["exec_type"]
    engine_options = dict((name, params[name]) for name in ENGINE_OPTIONS)
    engine_argv, warnings = build_engine_argv(
        params["python"], params["command"], engine_options, params["extra_args"], description
    )
    launch = None
    # Where the ranks go, the same inputs for mpirun and srun.
    placement = dict(
        num_processes=params["num_processes"],
        processes_per_host=params["processes_per_host"],
        hostfile=params["hostfile"],
        hostfile_dir=HOSTFILE_DIR,
        command_chars=len(shlex.join(engine_argv)),
    )
    if exec_type == "mpi" and params["hosts"]:
        check_mpi_bin(params["mpi_bin"])  # before `MPI_BIN --version` runs
        flavor, version = resolve_flavor(module, params["mpi_bin"], params["mpi_flavor"])
        launch = build_mpi_prefix(
            params["hosts"],
            flavor=flavor,
            flavor_version=version,
            mpi_bin=params["mpi_bin"],
            oversubscribe=params["oversubscribe"],
            allow_run_as_root=params["allow_run_as_root"],
            mpi_params=params["mpi_params"],
            env=params["env"],
            ssh_command=params["ssh_command"],
            **placement,
        )
        warnings.extend(launch["warnings"])
        argv = launch["prefix"] + engine_argv
    elif exec_type == "slurm":
        launch = build_srun_prefix(
            params["hosts"],
            srun_path=srun,
            slurm_mpi=params["slurm_mpi"],
            partition=params["slurm_partition"],
            account=params["slurm_account"],
            time_limit=params["slurm_time_limit"],
            slurm_params=params["slurm_params"],
            **placement,
        )
        warnings.extend(launch["warnings"])
        argv = launch["prefix"] + with_env(engine_argv, params["env"])
    elif exec_type == "container":
        argv = wrap_in_container(
            engine_argv,
            params["container_image"],
            params["container_engine"],
            cache_dir=params["cache_dir"],
            output=params["output"],
            results_dir=params["results_dir"],
            config=params["config"],
            env=params["env"],
            command=params["command"],
        )
    else:
        argv = with_env(engine_argv, params["env"])
    if exec_type == "mpi" and not params["hosts"]:
        warnings.append("hosts: exec_type=mpi with no hosts builds no MPI prefix; the engine runs as one process")
    if exec_type not in ("mpi", "slurm") and (params["hosts"] or params["num_processes"] or params["mpi_params"]):
        warnings.append("hosts, num_processes and mpi_params are only used with exec_type=mpi (hosts and "
                        "num_processes also with exec_type=slurm)")  # fmt: skip
    if exec_type == "slurm" and params["mpi_params"]:
        warnings.append("mpi_params: not used with exec_type=slurm; give srun arguments in slurm_params")
    if exec_type != "slurm" and (params["slurm_params"] or params["slurm_batch"] or params["sbatch_script_path"]):
        warnings.append("slurm_params, slurm_batch and sbatch_script_path are only used with exec_type=slurm")
    if exec_type == "slurm" and params["sbatch_script_path"] and not params["slurm_batch"]:
        warnings.append("sbatch_script_path: only written with slurm_batch=true")
    return argv, engine_argv, launch, warnings


if __name__ == "__main__":
    main()
