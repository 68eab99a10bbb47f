"""Command line: `kvcache run | datasize | report | describe | clean | baseline | trace | mlperf`.

Exit codes: 0 ok, 2 bad input (the message names the option), 1 the run failed.
"""

import argparse
import contextlib
import json
import sys
from typing import List, Optional

from kvcache import __version__
from kvcache.errors import UsageError, clip
from kvcache.options import (
    BASELINE,
    CLEAN,
    COMMANDS,
    DATASIZE,
    DESCRIBE,
    MLPERF_CHECK,
    MLPERF_RUN,
    REPORT,
    RUN,
    TRACE,
    add_arguments,
)
from kvcache.reference_flags import epilog as not_yet_epilog
from kvcache.reference_flags import refuse_not_yet
from kvcache.run_config import resolve, resolve_given

EPILOG = "Every option can also be set in --config FILE.yaml; flags typed on the command line win."
ARGPARSE_MESSAGE_CHARS = 200  # argparse quotes unrecognized arguments in full


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) that quotes at most a short prefix of what was typed."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {clip(message, ARGPARSE_MESSAGE_CHARS)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kvcache",
        description="Measure a storage system as the KV-cache offload tier of LLM inference (GPU -> CPU -> storage).",
    )
    parser.add_argument("--version", action="version", version=f"kvcache {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (RUN, DATASIZE, CLEAN, BASELINE):
        # run's help shows each default; datasize and clean put theirs in the help text where they matter
        extra = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter} if command == RUN else {}
        epilog = f"{EPILOG} {not_yet_epilog()}" if command == RUN else EPILOG
        add_arguments(sub.add_parser(command, help=COMMANDS[command], epilog=epilog, **extra), command)
    report = sub.add_parser(REPORT, help=COMMANDS[REPORT])
    report.add_argument("results", nargs="+", metavar="RESULT.json")
    form = report.add_mutually_exclusive_group()
    form.add_argument(
        "--json",
        dest="form",
        action="store_const",
        const="json",
        help="print each checked result with its headline figures as JSON",
    )
    form.add_argument("--headline", dest="form", action="store_const", const="headline", help="print only the headline")
    report.add_argument(
        "--csv",
        metavar="OUT.csv",
        help="write one row per result (the headline figures and every scalar field) to this new file",
    )
    report.add_argument(
        "--xlsx",
        metavar="OUT.xlsx",
        help="write a workbook (sheets summary, config, per_rank, timeseries, qos) to this new file; "
        "needs the [report] extra",
    )
    report.add_argument(
        "--html",
        metavar="OUT.html",
        help="write a self-contained page with the headline and plots (bandwidth over time, latency percentiles, "
        "per-rank bars, QoS) to this new file; several results are compared; needs the [report] extra",
    )
    describe = sub.add_parser(DESCRIBE, help=COMMANDS[DESCRIBE])
    describe.add_argument("--json", action="store_true", help="the same output: describe always prints JSON")
    tools = sub.add_parser(TRACE, help=COMMANDS[TRACE]).add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True
    fio = tools.add_parser("fio", help="a fio job with the trace's operation sizes (bssplit) and read/write mix")
    fio.add_argument("trace", metavar="TRACE", help="an --io-trace-log file (.csv, or .csv.zst)")
    fio.add_argument("--output", metavar="JOB.fio", help="write the job here, a new file (default: stdout)")
    # Choices checked by trace_fio (one list, and no numpy import for the other commands' parsing).
    fio.add_argument("--tier", help="the rows replayed: Tier-0, Tier-1, Tier-2 or all (default: the storage's)")
    fio.add_argument("--filename", help="fio's filename=: the device or file the job runs on (default: a new file)")
    mlperf = sub.add_parser("mlperf", help="the MLPerf Storage submission path: `mlperf run`, `mlperf check DIR`")
    steps = mlperf.add_subparsers(dest="step", metavar="STEP")
    steps.required = True
    add_arguments(
        steps.add_parser(
            "run",
            help=COMMANDS[MLPERF_RUN],
            epilog=(
                "CLOSED takes only where it runs and writes (cache dir, results dir, names, MPI, what it prints); "
                "OPEN takes every workload option of `kvcache run` as well, and the results record each change. "
                "A workload option left out takes the rules' value for each option (see --what-if), not the "
                "default shown here."
            ),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        ),
        MLPERF_RUN,
    )
    check = steps.add_parser("check", help=COMMANDS[MLPERF_CHECK])
    check.add_argument(
        "results", metavar="DIR", help="a results tree or any directory in it: every run under it, or the one it is in"
    )
    check.add_argument("--json", action="store_true", help="print the verdict and its reasons as JSON")
    return parser


def main(argv: Optional[List[str]] = None, stdout=None, stderr=None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top level has no option that takes a value, so the first bare word is the command.
    command = next((a for a in argv if not a.startswith("-")), None)
    rest = argv[argv.index(command) + 1 :] if command else []
    # The commands that take kv-cache.py's flags; `mlperf run`'s step comes right after `mlperf`.
    taking = RUN if command == RUN else MLPERF_RUN if command == "mlperf" and rest[:1] == ["run"] else None
    if taking:
        # Before argparse, which would call a kv-cache.py flag we lack an unrecognized argument.
        try:
            refuse_not_yet(rest if taking == RUN else rest[1:])
        except UsageError as exc:
            stderr.write(f"kvcache {taking}: error: {exc}\n")
            return 2
    parser = build_parser()
    # argparse itself exits 2 on unknown flags and bad choices; its messages go to the streams we were given.
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        args = parser.parse_args(argv)
    try:
        if args.command == DESCRIBE:
            from kvcache.describe import describe  # noqa: PLC0415

            stdout.write(json.dumps(describe(), indent=2) + "\n")
            return 0
        if args.command == REPORT:
            from kvcache.report import run_report  # noqa: PLC0415 - keeps `describe` light

            return run_report(args.results, args.form, stdout, args.csv, args.xlsx, args.html)
        if args.command == TRACE:
            from kvcache.trace_fio import run_trace_fio  # noqa: PLC0415

            return run_trace_fio(args.trace, args.output, args.tier, args.filename, stdout)
        if args.command == "mlperf" and args.step == "check":
            from kvcache.mlperf.check import run_check  # noqa: PLC0415

            return run_check(args.results, args.json, stdout)
        if args.command == "mlperf":
            from kvcache.mlperf.driver import run_mlperf  # noqa: PLC0415 - numpy and friends only when running

            config, models, given = resolve_given(MLPERF_RUN, args)
            return run_mlperf(config, models, given, argv, stdout, stderr)
        config, models = resolve(args.command, args)
        if args.command == CLEAN:
            from kvcache.clean import run_clean  # noqa: PLC0415

            return run_clean(config.cache_dir, config.dry_run, stdout)
        if args.command == BASELINE:
            from kvcache.baseline import run_baseline  # noqa: PLC0415

            return run_baseline(config, stdout, stderr)
        if args.command == DATASIZE:
            from kvcache.datasize import run_datasize  # noqa: PLC0415

            return run_datasize(config, models, stdout, stderr)
        from kvcache.benchmark import run_benchmark  # noqa: PLC0415 - numpy and friends only when running

        return run_benchmark(config, models, stdout, stderr)
    except UsageError as exc:
        name = f"mlperf {args.step}" if args.command == "mlperf" else args.command
        stderr.write(f"kvcache {name}: error: {exc}\n")
        return 2
