"""Every engine option, declared once: argparse flags, YAML config keys and validation all come from here."""

import argparse
import difflib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from kvcache import break_even, value_rules
from kvcache.config_file import read_config_file
from kvcache.errors import SHOWN_CHARS, UsageError, clip, shown, shown_path
from kvcache.mlperf import workloads as mlperf_workloads
from kvcache.units import ALIGN, MIB
from kvcache.workload import DEFAULT_PROFILE, WorkloadProfile

RUN = "run"
DATASIZE = "datasize"
CLEAN = "clean"
REPORT = "report"
DESCRIBE = "describe"
TRACE = "trace"
BASELINE = "baseline"
MLPERF_RUN = "mlperf run"
MLPERF_CHECK = "mlperf check"
# An MLPerf trial is a benchmark run: it takes the workload's options (and the rules say which it may set).
RUNS = (RUN, MLPERF_RUN)
BOTH = (RUN, DATASIZE, MLPERF_RUN)

# Every subcommand with its one-line help; `report` and `describe` read files or nothing, so no option of the
# table belongs to them (report's RESULT.json arguments are declared in cli.py).
COMMANDS: Dict[str, str] = {
    RUN: "run the benchmark (one rank, or every rank under mpirun)",
    DATASIZE: "what a run needs: working set, tier sizes, storage capacity",
    REPORT: "print the summary of result JSON files",
    DESCRIBE: "the option contract as JSON: every option, the models, the result schema",
    CLEAN: "remove run directories left under a cache dir by runs that are no longer running",
    BASELINE: "what fio gets from the storage under a cache dir at the engine's chunk size and concurrency, as JSON "
    "for `run --baseline`",
    TRACE: "turn an --io-trace-log trace into a job for another tool: `trace fio TRACE` writes a fio job file",
    MLPERF_RUN: "the MLPerf Storage KV-cache options (CLOSED or OPEN) x trials, in the submission's results layout",
    MLPERF_CHECK: "the MLPerf rules verdict (CLOSED, OPEN or INVALID) of a results tree, with every reason",
}

# Every number has an upper bound, so that no value can overflow the arithmetic that uses it.
MAX_USERS = 100_000
MAX_CAPACITY_GIB = 4 << 20  # 4 PiB: beyond any single host's memory or a cache dir's storage
MAX_BYTES = 2**63 - 1  # the largest file offset


@dataclass(frozen=True)
class Option:
    name: str  # attribute and config key, e.g. num_users (the flag is --num-users)
    kind: type  # int, float, str or bool (a bool is a bare flag)
    default: Any
    help: str
    commands: Tuple[str, ...] = BOTH
    choices: Optional[Tuple[str, ...]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False
    # 0 switches the feature off; any other value must be at least this (a rate of 1e-300/s is not a rate).
    nonzero_minimum: Optional[float] = None
    multiple_of: Optional[float] = None  # a number must be a whole multiple of it (a chunk of whole 4 KiB blocks)
    unit: Optional[str] = None  # what a number counts: GiB, s, MiB, users, requests, ...
    # The key of kv-cache.py's config.yaml that sets this option (`section.key`), read by --config as well.
    reference_key: Optional[str] = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: Tuple[Option, ...] = (
    Option("model", str, "llama3.1-8b", "model whose KV-cache geometry sets bytes per token"),
    Option("num_users", int, 100, "simulated users (per rank under MPI)", minimum=1, maximum=MAX_USERS, unit="users"),
    Option(
        "ranks",
        int,
        1,
        "MPI ranks on one host: datasize checks the host for them; baseline runs io-depth x ranks fio jobs",
        commands=(DATASIZE, BASELINE),
        minimum=1,
        maximum=1_000_000,
        unit="ranks",
    ),
    Option(
        "duration",
        float,
        60.0,
        "measurement window in seconds",
        commands=RUNS,
        minimum=0,
        exclusive_minimum=True,
        maximum=7 * 24 * 3600,
        unit="s",
    ),
    Option(
        "max_requests",
        int,
        0,
        "stop after this many requests per rank (0: no limit)",
        commands=RUNS,
        minimum=0,
        maximum=10**12,
        unit="requests",
    ),
    Option("seed", int, 42, "random seed; rank N uses seed + N", commands=RUNS, minimum=0, maximum=2**62),
    Option(
        "gpu_mem_gb",
        float,
        16.0,
        "GPU tier budget in GiB (0 disables the tier)",
        minimum=0,
        maximum=MAX_CAPACITY_GIB,
        unit="GiB",
    ),
    Option(
        "cpu_mem_gb",
        float,
        4.0,
        "CPU (host memory) tier budget in GiB (0 disables the tier)",
        minimum=0,
        maximum=MAX_CAPACITY_GIB,
        unit="GiB",
    ),
    Option(
        "storage_capacity_gb",
        float,
        0.0,
        "storage tier budget in GiB (0: 80% of the free space under --cache-dir)",
        commands=RUNS,
        minimum=0,
        maximum=MAX_CAPACITY_GIB,
        unit="GiB",
    ),
    Option(
        "cache_dir",
        str,
        None,
        "directory on the storage under test; the run works in a subdirectory it creates",
        commands=(*RUNS, CLEAN, BASELINE),
    ),
    Option("keep_cache", bool, False, "leave the run's cache files in place at the end", commands=RUNS),
    Option(
        "io_engine",
        str,
        "direct",
        "storage I/O: direct (O_DIRECT) or buffered (fsync + fadvise DONTNEED)",
        commands=(*RUNS, BASELINE),
        choices=("direct", "buffered"),
    ),
    Option(
        "io_chunk_mib",
        float,
        16.0,
        "storage I/O size in MiB, whole 4 KiB blocks (0.00390625 MiB) from 4 KiB to 1 GiB: 0.25 is 256 KiB",
        commands=(*BOTH, BASELINE),
        minimum=ALIGN / MIB,
        maximum=1024,
        multiple_of=ALIGN / MIB,
        unit="MiB",
    ),
    Option(
        "io_depth",
        int,
        8,
        "storage operations in flight at once (buffers of --io-chunk-mib each)",
        commands=(*BOTH, BASELINE),
        minimum=1,
        maximum=1024,
    ),
    Option(
        "generation_mode",
        str,
        "none",
        "decode time per generated token: none 0, fast 2 ms, realistic 30 ms",
        commands=RUNS,
        choices=("none", "fast", "realistic"),
    ),
    Option(
        "performance_profile",
        str,
        "latency",
        "latency: users think between requests and the SLA verdict applies; throughput: back-to-back requests",
        commands=RUNS,
        choices=("latency", "throughput"),
    ),
    Option("disable_multi_turn", bool, False, "every request starts a new conversation"),
    Option("disable_prefix_caching", bool, False, "no shared system-prompt prefix"),
    Option("promote", bool, False, "move an entry read from a lower tier back to the top", commands=RUNS),
    Option(
        "request_rate",
        float,
        0.0,
        "open loop: Poisson arrivals per second per rank (0: closed-loop users)",
        commands=RUNS,
        minimum=0,
        nonzero_minimum=0.001,
        maximum=1_000_000,
        unit="requests/s",
    ),
    Option(
        "max_concurrent_requests",
        int,
        0,
        "requests served at once (0: one per user; min(users, 500) with --user-loop open); others queue",
        commands=RUNS,
        minimum=0,
        maximum=MAX_USERS,  # one worker thread each in the open loop
        unit="requests",
    ),
    Option(
        "stats_interval",
        float,
        1.0,
        "seconds between time-series samples",
        commands=RUNS,
        minimum=0.05,
        maximum=3600,
        unit="s",
    ),
    Option(
        "gpu_backend",
        str,
        "auto",
        "auto: real CUDA memory through torch or cupy when present, else simulated",
        commands=RUNS,
        choices=("auto", "simulated", "torch", "cupy"),
    ),
    Option(
        "mpi",
        str,
        "auto",
        "auto: use MPI when launched by mpirun/mpiexec; on: require it; off: never",
        commands=RUNS,
        choices=("auto", "on", "off"),
    ),
    Option(
        "straggler_fraction",
        float,
        0.5,
        "flag ranks whose storage bandwidth is below this share of the median",
        commands=RUNS,
        minimum=0,
        maximum=1,
        unit="fraction",
    ),
    Option(
        "num_gpus",
        int,
        1,
        "GPUs per rank: the GPU tier is --gpu-mem-gb on each of them",
        minimum=1,
        maximum=1024,
        unit="GPUs",
    ),
    Option(
        "tensor_parallel",
        int,
        1,
        "tensor-parallel degree (at most --num-gpus): each entry is 1/TP of the model's KV bytes",
        minimum=1,
        maximum=1024,
        unit="GPUs",
    ),
    # The break-even against recompute (kvcache.break_even): only the result's estimate uses them.
    Option(
        "gpu_profile",
        str,
        break_even.DEFAULT_GPU_PROFILE,
        "the GPU that would recompute a context, for the break-even against recompute (its dense FP16 peak)",
        commands=RUNS,
        choices=tuple(break_even.GPU_PEAK_TFLOPS),
    ),
    Option(
        "gpu_peak_tflops",
        float,
        0.0,
        "that GPU's peak in TFLOP/s, instead of --gpu-profile's (0: the profile's)",
        commands=RUNS,
        minimum=0,
        maximum=1e6,
        unit="TFLOP/s",
    ),
    Option(
        "gpu_utilization",
        float,
        break_even.DEFAULT_UTILIZATION,
        "the share of that peak a prefill reaches, for the break-even against recompute",
        commands=RUNS,
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    Option(
        "user_loop",
        str,
        "closed",
        "closed: a user waits for its reply, thinks, asks again; open: kv-cache.py's users, who ask again after "
        "their think time whether or not the reply came, served by --max-concurrent-requests workers "
        "(0: min(users, 500)) from a queue ordered by QoS priority",
        commands=RUNS,
        choices=("closed", "open"),
    ),
    Option(
        "max_concurrent_allocs",
        int,
        0,
        "new entries being placed and written at once (demotions included); others wait (0: no limit)",
        commands=RUNS,
        minimum=0,
        maximum=MAX_USERS,
        unit="entries",
    ),
    Option(
        "prefix_hit_probability",
        float,
        0.2,
        "share of requests that begin with one of the --system-prompts shared prompts",
        minimum=0,
        maximum=1,
        unit="fraction",
        reference_key="prefix_cache.system_prompt_hit_probability",
    ),
    Option(
        "system_prompts",
        int,
        3,
        "distinct shared system prompts; each is written once and read by the requests that use it",
        minimum=1,
        maximum=10_000,
        unit="prompts",
    ),
    Option(
        "system_prompt_tokens",
        int,
        1024,
        "tokens of each system prompt (its KV entry); a request's own context is that much shorter",
        minimum=1,
        maximum=1_000_000,
        unit="tokens",
    ),
    Option(
        "multi_turn_reads",
        str,
        "all",
        "what a later turn of a conversation re-reads: all its earlier turns, or only the previous one",
        choices=("all", "previous"),
    ),
    Option(
        "max_turns",
        int,
        50,
        "turns after which a conversation ends",
        minimum=1,
        maximum=10_000,
        unit="turns",
        reference_key="conversation.max_turns_per_conv",
    ),
    Option(
        "end_conversation_probability",
        float,
        0.2,
        "chance that a conversation ends before each later request",
        minimum=0,
        maximum=1,
        unit="fraction",
        reference_key="conversation.end_conversation_probability",
    ),
    Option(
        "decode_batch_size",
        int,
        32,
        "tokens per decode batch: a cached entry is re-read whole once per batch, at least once "
        "(0: decode reads the entry once)",
        commands=RUNS,
        minimum=0,
        maximum=1_000_000,
        unit="tokens",
        reference_key="decode.batch_size",
    ),
    Option(
        "long_context_tokens",
        int,
        10_000,
        "requests with a context of at least this many tokens have no decode step (0: every request decodes)",
        commands=RUNS,
        minimum=0,
        maximum=10_000_000,
        unit="tokens",
    ),
    Option("enable_rag", bool, False, "RAG: documents are chunked and written, then requests read top-k chunks"),
    Option(
        "rag_num_docs",
        int,
        10,
        "documents ingested (written as chunks) at the start of the window",
        minimum=1,
        maximum=1_000_000,
        unit="documents",
    ),
    Option(
        "rag_chunk_tokens",
        int,
        512,
        "tokens per document chunk (each chunk is one entry)",
        minimum=1,
        maximum=1_000_000,
        unit="tokens",
        reference_key="rag.chunk_size_tokens",
    ),
    Option(
        "rag_max_chunk_bytes",
        int,
        256 << 20,
        "largest chunk entry in bytes: a chunk holds fewer tokens when the model's would exceed it",
        minimum=4096,
        maximum=MAX_BYTES,
        unit="bytes",
        reference_key="rag.max_chunk_bytes",
    ),
    Option(
        "rag_top_k",
        int,
        5,
        "chunks a RAG request reads (at most the document's)",
        commands=RUNS,
        minimum=1,
        maximum=10_000,
        unit="chunks",
        reference_key="rag.top_k_chunks",
    ),
    Option(
        "rag_request_probability",
        float,
        0.1,
        "share of requests that retrieve document chunks",
        commands=RUNS,
        minimum=0,
        maximum=1,
        unit="fraction",
        reference_key="rag.request_probability",
    ),
    Option(
        "rag_retrieval_distribution",
        str,
        "zipfian",
        "which chunks a request reads: zipfian (chunk i weighs 1/(i+1)), uniform, or random (same as uniform)",
        commands=RUNS,
        choices=("zipfian", "uniform", "random"),
        reference_key="rag.retrieval_distribution",
    ),
    Option(
        "rag_large_model_doc_tokens_min",
        int,
        1024,
        "shortest document for a large model (64 layers or more, or hidden size 8192 or more)",
        minimum=1,
        maximum=10_000_000,
        unit="tokens",
        reference_key="rag.large_model_doc_tokens_min",
    ),
    Option(
        "rag_large_model_doc_tokens_max",
        int,
        4096,
        "longest document for a large model",
        minimum=1,
        maximum=10_000_000,
        unit="tokens",
        reference_key="rag.large_model_doc_tokens_max",
    ),
    Option(
        "rag_small_model_doc_tokens_min",
        int,
        4000,
        "shortest document for other models",
        minimum=1,
        maximum=10_000_000,
        unit="tokens",
        reference_key="rag.small_model_doc_tokens_min",
    ),
    Option(
        "rag_small_model_doc_tokens_max",
        int,
        12000,
        "longest document for other models",
        minimum=1,
        maximum=10_000_000,
        unit="tokens",
        reference_key="rag.small_model_doc_tokens_max",
    ),
    # -- replay, phases and the I/O trace (issue 12) --
    Option(
        "use_burst_trace",
        bool,
        False,
        "replay a BurstGPT trace (--burst-trace-path): arrivals at its timestamps, its token counts",
        commands=RUNS,
    ),
    Option(
        "burst_trace_path",
        str,
        None,
        "the BurstGPT CSV: a file, a directory of *.csv, or a glob",
        commands=RUNS,
    ),
    Option(
        "trace_speedup",
        float,
        1.0,
        "BurstGPT replay time scale: 10 replays ten times faster (0: as fast as possible)",
        commands=RUNS,
        minimum=0,
        maximum=1_000_000,
    ),
    Option(
        "replay_cycles",
        int,
        0,
        "passes over the trace or dataset (0: until the window ends)",
        commands=RUNS,
        minimum=0,
        maximum=1_000_000,
        unit="cycles",
    ),
    Option(
        "dataset_path",
        str,
        None,
        "replay a ShareGPT JSON dataset: each conversation's turns as multi-turn requests",
        commands=RUNS,
    ),
    Option(
        "max_conversations",
        int,
        500,
        "conversations taken from the ShareGPT dataset",
        commands=RUNS,
        minimum=1,
        maximum=100_000_000,
        unit="conversations",
    ),
    Option(
        "precondition",
        bool,
        False,
        "fill the storage with sequential writes before the window (reported apart from it)",
        commands=RUNS,
    ),
    Option(
        "precondition_size_gb",
        float,
        0.0,
        "GiB each rank writes when preconditioning (0: twice its storage capacity)",
        commands=RUNS,
        minimum=0,
        maximum=MAX_CAPACITY_GIB,
        unit="GiB",
    ),
    Option(
        "precondition_threads",
        int,
        0,
        "writers per rank when preconditioning (0: the host's CPUs)",
        commands=RUNS,
        minimum=0,
        maximum=1024,
        unit="threads",
    ),
    Option(
        "prefill_only",
        bool,
        False,
        "a disaggregated prefill node: requests write their KV and never read it back",
        commands=RUNS,
    ),
    Option(
        "decode_only",
        bool,
        False,
        "a disaggregated decode node: entries are written before the window, then only read",
        commands=RUNS,
    ),
    # -- autoscaling (issue 16): the user count changes in steps during the window (kvcache/autoscaler.py) --
    Option(
        "enable_autoscaling",
        bool,
        False,
        "search, during the window, for the users per rank this storage carries: start at --num-users, run "
        "each user count for --autoscaler-step-s, then grow or shrink it from what the step measured",
        commands=(RUN,),
    ),
    Option(
        "autoscaler_mode",
        str,
        "qos",
        "qos: the largest user count at which every QoS class's p95 end-to-end latency stays within "
        "--target-saturation x its target; capacity: the user count at which storage bandwidth stops growing",
        commands=(RUN,),
        choices=("qos", "capacity"),
    ),
    Option(
        "target_saturation",
        float,
        0.8,
        "qos autoscaling: a step holds when every QoS class's p95 is at most this share of its p95 target "
        "(1: exactly the targets)",
        commands=(RUN,),
        minimum=0,
        exclusive_minimum=True,
        maximum=1,
        unit="fraction",
    ),
    Option(
        "autoscaler_step_s",
        float,
        10.0,
        "autoscaling: seconds each user count runs before the autoscaler decides (--duration bounds the search)",
        commands=(RUN,),
        minimum=0.5,
        maximum=24 * 3600,
        unit="s",
    ),
    Option(
        "autoscaler_min_users",
        int,
        1,
        "autoscaling: fewest users per rank the search tries",
        commands=(RUN,),
        minimum=1,
        maximum=MAX_USERS,
        unit="users",
        reference_key="autoscaler.min_users",
    ),
    Option(
        "autoscaler_max_users",
        int,
        10_000,
        "autoscaling: most users per rank the search tries",
        commands=(RUN,),
        minimum=1,
        maximum=MAX_USERS,
        unit="users",
        reference_key="autoscaler.max_users",
    ),
    Option(
        "autoscaler_scale_up_factor",
        float,
        2.0,
        "autoscaling: users x this after a step that holds (qos) or gains (capacity), until the first miss "
        "(kv-cache.py: 1.2)",
        commands=(RUN,),
        minimum=1,
        exclusive_minimum=True,
        maximum=100,
        unit="factor",
        reference_key="autoscaler.scale_up_factor",
    ),
    Option(
        "autoscaler_scale_down_factor",
        float,
        0.5,
        "qos autoscaling: users x this after a miss while no smaller count has held yet (kv-cache.py: 0.8)",
        commands=(RUN,),
        minimum=0,
        exclusive_minimum=True,
        maximum=0.99,
        unit="factor",
        reference_key="autoscaler.scale_down_factor",
    ),
    Option(
        "autoscaler_min_gain",
        float,
        0.05,
        "capacity autoscaling: a step gains when its storage bandwidth beats the best so far by this share",
        commands=(RUN,),
        minimum=0,
        maximum=10,
        unit="fraction",
    ),
    Option(
        "autoscaler_plateau_steps",
        int,
        2,
        "capacity autoscaling: steps in a row without a gain that end the search",
        commands=(RUN,),
        minimum=1,
        maximum=1000,
        unit="steps",
        reference_key="autoscaler.consecutive_samples_required",
    ),
    Option(
        "enable_latency_tracing",
        bool,
        False,
        "block-layer latency (issue to completion) and request size histograms of the cache dir's disks during the "
        "window, by bpftrace on each host (root, bpftrace and tracefs; refused with the reason elsewhere)",
        commands=RUNS,
    ),
    Option(
        "io_trace_log",
        str,
        None,
        "log every cache operation to this CSV (.zst: compressed) and do no storage I/O at all",
        commands=(RUN,),  # a trace run does no I/O: it measures nothing an MLPerf trial could report
    ),
    Option(
        "log_level",
        str,
        "INFO",
        "what the run prints on stderr: DEBUG adds each rank's setup and a line per sample, INFO the progress "
        "line and warnings, WARNING only warnings, ERROR and CRITICAL only errors (the result keeps every warning)",
        commands=RUNS,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    ),
    Option("output", str, None, "write the result JSON here", commands=(RUN, BASELINE)),
    Option(
        "baseline",
        str,
        None,
        "the JSON `kvcache baseline` wrote for this host's cache dir (the same path on every host): the result "
        "also states the storage bandwidth as a share of it",
        commands=RUNS,
    ),
    Option(
        "xlsx_output",
        str,
        None,
        "also write the result as an XLSX workbook here, as `kvcache report --xlsx` does (the [report] extra); "
        "a file that exists is refused",
        commands=(RUN,),
    ),
    Option(
        "quiet", bool, False, "no progress at all (no live view, no DEBUG sample lines)", commands=(*RUNS, BASELINE)
    ),
    Option(
        "progress",
        str,
        "auto",
        "rank 0's live view at --log-level INFO (the [live] extra, rich): auto when its stderr is a terminal "
        "(under mpirun or srun it is a pipe), live always (with the fleet of every rank, for mpirun or srun in a "
        "terminal), off never",
        commands=RUNS,
        choices=("auto", "live", "off"),
    ),
    Option("json", bool, False, "print JSON instead of a table", commands=(DATASIZE, MLPERF_RUN)),
    # `kvcache mlperf run`: which of the rules' options, how many trials, and where the results tree goes.
    Option(
        "category",
        str,
        None,
        "MLPerf category (required): closed runs the rules' parameters as they are; open lets every workload "
        "parameter change and records each change",
        commands=(MLPERF_RUN,),
        choices=("closed", "open"),
    ),
    Option(
        "option",
        str,
        "all",
        mlperf_workloads.option_help(),
        commands=(MLPERF_RUN,),
        choices=(*mlperf_workloads.OPTION_ORDER, "all"),
    ),
    Option(
        "trials",
        int,
        mlperf_workloads.TRIALS,
        f"synchronized runs of each option (CLOSED: {mlperf_workloads.TRIALS})",
        commands=(MLPERF_RUN,),
        minimum=1,
        maximum=100,
        unit="trials",
    ),
    Option(
        "delay",
        float,
        mlperf_workloads.DELAY_S,
        f"seconds of rest before each option after the first (CLOSED: {mlperf_workloads.DELAY_S:g}), so that one "
        "option's writes settle",
        commands=(MLPERF_RUN,),
        minimum=0,
        maximum=24 * 3600,
        unit="s",
    ),
    Option(
        "results_dir",
        str,
        None,
        "directory of the results tree (required): <category>/<organization>/results/<system>/kv_cache/...",
        commands=(MLPERF_RUN,),
    ),
    Option(
        "organization",
        str,
        "unnamed-organization",
        "the submitter's name, a directory of the results tree (letters, digits, . _ -)",
        commands=(MLPERF_RUN,),
    ),
    Option(
        "system_name",
        str,
        None,
        "the system under test's name, a directory of the results tree (default: rank 0's host name)",
        commands=(MLPERF_RUN,),
    ),
    Option(
        "what_if",
        bool,
        False,
        "print the trials' parameters, their `kvcache run` commands and the results layout; run nothing",
        commands=(MLPERF_RUN,),
    ),
    Option(
        "check_free_bytes",
        int,
        None,
        "exit 1 when the storage needed exceeds this many free bytes",
        commands=(DATASIZE,),
        minimum=0,
        maximum=MAX_BYTES,
        unit="bytes",
    ),
    Option(
        "check_mem_bytes",
        int,
        None,
        "exit 1 when the host memory needed exceeds this many bytes",
        commands=(DATASIZE,),
        minimum=0,
        maximum=MAX_BYTES,
        unit="bytes",
    ),
    Option("dry_run", bool, False, "say what would be removed, remove nothing", commands=(CLEAN,)),
    # `kvcache baseline`: the fio jobs.
    Option(
        "baseline_runtime",
        float,
        10.0,
        "seconds each fio job (write, read, mixed) runs",
        commands=(BASELINE,),
        minimum=0,
        exclusive_minimum=True,
        maximum=3600,
        unit="s",
    ),
    Option(
        "baseline_size_gb",
        float,
        1.0,
        "GiB of file each fio job works on (whole --io-chunk-mib chunks)",
        commands=(BASELINE,),
        minimum=0,
        exclusive_minimum=True,
        maximum=MAX_CAPACITY_GIB,
        unit="GiB",
    ),
    Option(
        "baseline_read_share",
        float,
        0.75,
        "share of the mixed fio job's operations that are reads",
        commands=(BASELINE,),
        minimum=0,
        maximum=1,
    ),
    Option("fio", str, "fio", "the fio executable (a name on PATH or a path)", commands=(BASELINE,)),
)


class _ByName(Mapping):
    """The options by name, read from OPTIONS at each lookup.

    Everything here reads the module's OPTIONS when it is called, never a copy made at import, so a
    test may add an option with `monkeypatch.setattr(options, "OPTIONS", options.OPTIONS + (Option(...),))`
    and the parser, config files, run_config.resolve() and describe all accept it.
    """

    def __getitem__(self, name: str) -> Option:
        for opt in OPTIONS:
            if opt.name == name:
                return opt
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter([o.name for o in OPTIONS])

    def __len__(self) -> int:
        return len(OPTIONS)


BY_NAME: Mapping[str, Option] = _ByName()


def options_for(command: str) -> List[Option]:
    return [o for o in OPTIONS if command in o.commands]


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Flags default to SUPPRESS so that a config file value is only overridden by what was typed."""
    for opt in options_for(command):
        text = opt.help.replace("%", "%%")  # argparse formats help with %
        if opt.default is not None and opt.kind is not bool:
            text += f" (default: {opt.default})"
        if opt.kind is bool:
            parser.add_argument(opt.flag, dest=opt.name, action="store_true", default=argparse.SUPPRESS, help=text)
        else:
            # Choices are checked by the converter, not by argparse, whose message would quote the whole value.
            parser.add_argument(
                opt.flag,
                dest=opt.name,
                default=argparse.SUPPRESS,
                type=_argparse_type(opt),
                help=text,
                metavar="{" + ",".join(opt.choices) + "}" if opt.choices else opt.kind.__name__.upper(),
            )
    parser.add_argument(
        "--config",
        dest="config",
        default=None,
        metavar="FILE.yaml",
        help=(
            "YAML file setting any of these options (underscores or dashes) and a `models:` mapping, "
            "or kv-cache.py's config.yaml as it is"
        ),
    )


def _argparse_type(opt: Option):
    def convert(text):
        try:
            value = opt.kind(text)
        except ValueError:  # also int() of more digits than Python converts
            raise argparse.ArgumentTypeError(f"expected {opt.kind.__name__}, got {shown(text)}") from None
        if opt.choices and value not in opt.choices:
            raise argparse.ArgumentTypeError(value_rules.choices_problem(opt.choices, value))
        return value

    convert.__name__ = opt.kind.__name__
    return convert


def check_value(opt: Option, value: Any, where: str) -> Any:
    """A value from a config file or a flag, checked against the option; errors start with `where`.

    The rules are value_rules.check, which the plugins apply to the same fields of `kvcache describe`."""
    checked, problem = value_rules.check(
        opt.kind.__name__,
        value,
        choices=opt.choices,
        minimum=opt.minimum,
        maximum=opt.maximum,
        exclusive_minimum=opt.exclusive_minimum,
        nonzero_minimum=opt.nonzero_minimum,
        default=opt.default,
        multiple_of=opt.multiple_of,
    )
    if problem is not None:
        raise UsageError(where, problem)
    return checked


@dataclass(frozen=True)
class LoadedConfig:
    """What a --config file gave: option values, user models, the workload profile and warnings.

    `models` maps a name to a `models:` spec (a mapping, checked by models.Registry) or to a Model already
    built from kv-cache.py's `model_configs`."""

    values: Dict[str, Any]
    models: Mapping
    workload: WorkloadProfile = DEFAULT_PROFILE
    warnings: Tuple[str, ...] = ()


def load_config(path: str, command: str) -> LoadedConfig:
    """Read a YAML config strictly: unknown keys and wrong types are errors naming the key.

    Our flat option keys, `models:` and the sections of kv-cache.py's config.yaml may stand side by side
    (kvcache.reference_config reads those). One file serves every step (datasize, then run): a key of
    another command is checked like any other, then left out of this command's values.
    """
    # Imported here: reference_config reads this module's option table.
    from kvcache import reference_config

    where = shown_path(path)
    data = read_config_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError("--config", f"{where} must hold a mapping of option: value")
    mine = {o.name for o in options_for(command)}
    sections = reference_config.section_names()
    flat: Dict[str, Tuple[str, Any]] = {}  # option name -> (key as written, checked value)
    reference: Dict[str, Any] = {}
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise UsageError("--config", f"{where}: models must be a mapping of name: {{layers, kv_heads, head_dim}}")
    for key, value in data.items():
        if key == "models":
            continue
        name = str(key).replace("-", "_")
        # gpu_backend is both an option (a string) and a kv-cache.py section (a mapping): the value tells which.
        if key in sections and (isinstance(value, dict) or name not in BY_NAME):
            reference[key] = value
            continue
        if name not in BY_NAME:
            raise UsageError(
                "--config", f"{where}: unknown key {shown(key)}{_did_you_mean(name, sections)}; {ALLOWED_KEYS}"
            )
        flat[name] = (key, check_value(BY_NAME[name], value, f"--config {where}: {key}"))
    given = reference_config.read(reference, f"--config {where}")
    for name, ref_key in given.keys.items():
        if name in flat:
            raise UsageError(
                f"--config {where}: {flat[name][0]}",
                f"{ref_key} sets the same option ({name}); give one of them",
            )
    both = sorted(str(name) for name in models if str(name) in given.models)
    if both:
        raise UsageError(
            f"--config {where}: models.{clip(both[0], SHOWN_CHARS)}",
            f"is also defined in {reference_config.MODEL_SECTION}; define each model once",
        )
    values = {name: value for name, (_key, value) in flat.items()}
    values.update(given.values)
    return LoadedConfig(
        {name: value for name, value in values.items() if name in mine},
        {**models, **given.models},
        given.profile,
        given.warnings,
    )


# What a config file's top level may hold (kept short: the message also quotes the path and the key).
ALLOWED_KEYS = "keys: the long options of `kvcache run`, `datasize` and `clean`, models, kv-cache.py's sections"


def _did_you_mean(name: str, sections=()) -> str:
    close = difflib.get_close_matches(name, [*BY_NAME, *sections], n=1)
    return f" (did you mean {close[0]}?)" if close else ""
