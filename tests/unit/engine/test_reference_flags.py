"""Every kv-cache.py flag is accounted for: an option of `kvcache run`, or refused as "not yet" in one line."""

import io
import re
from pathlib import Path

import pytest

from kvcache.cli import build_parser, main
from kvcache.options import BY_NAME, RUN, options_for
from kvcache.reference_flags import NOT_YET

README = Path(__file__).resolve().parents[3] / "README.md"

# kv-cache.py's command line (the facts: its kv_cache/cli.py), each flag with a value it accepts (None: a bare flag).
REFERENCE_FLAGS = (
    ("--log-level", "DEBUG"),
    ("--model", "llama3.1-8b"),
    ("--num-users", "10"),
    ("--duration", "30"),
    ("--gpu-mem-gb", "16"),
    ("--num-gpus", "2"),
    ("--tensor-parallel", "2"),
    ("--cpu-mem-gb", "4"),
    ("--cache-dir", "/mnt/nvme"),
    ("--generation-mode", "realistic"),
    ("--performance-profile", "throughput"),
    ("--disable-multi-turn", None),
    ("--disable-prefix-caching", None),
    ("--enable-rag", None),
    ("--rag-num-docs", "20"),
    ("--enable-autoscaling", None),
    ("--autoscaler-mode", "capacity"),
    ("--target-saturation", "0.8"),
    ("--use-burst-trace", None),
    ("--burst-trace-path", "BurstGPT/data/BurstGPT_1.csv"),
    ("--validation-trace", "trace.json"),
    ("--dataset-path", "sharegpt.json"),
    ("--max-conversations", "500"),
    ("--output", "result.json"),
    ("--seed", "7"),
    ("--max-concurrent-allocs", "16"),
    ("--request-rate", "5"),
    ("--max-requests", "100"),
    ("--xlsx-output", "result.xlsx"),
    ("--config", "config.yaml"),
    ("--storage-capacity-gb", "100"),
    ("--precondition", None),
    ("--precondition-size-gb", "50"),
    ("--precondition-threads", "8"),
    ("--trace-speedup", "2.0"),
    ("--replay-cycles", "1"),
    ("--prefill-only", None),
    ("--decode-only", None),
    ("--io-trace-log", "trace.csv"),
    ("--enable-latency-tracing", None),
)
OURS = {o.flag for o in options_for(RUN)} | {"--config"}


def typed(flag, value):
    return [flag] if value is None else [flag, value]


def call(argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def not_yet_line(flag):
    return (
        f"kvcache run: error: {flag}: {NOT_YET[flag]} is not available in this version of kvcache "
        "(see the README, kv-cache.py → kvcache)\n"
    )


def readme_table_rows():
    """(first cell, second cell) of every row of the README's "kv-cache.py → kvcache" table."""
    text = README.read_text(encoding="utf-8")
    heading = re.search(r"^#+ kv-cache\.py → kvcache$", text, flags=re.M)
    assert heading, "README: no section 'kv-cache.py → kvcache'"
    section = re.split(r"^#", text[heading.end() :], maxsplit=1, flags=re.M)[0]
    return [
        (m.group(1), m.group(2).strip())
        for m in re.finditer(r"^\| `(--[a-z0-9-]+)` \| ([^|]+) \|", section, flags=re.M)
    ]


def readme_table_flags():
    """The first cell of every row of the README's "kv-cache.py → kvcache" table."""
    return {flag for flag, _ours in readme_table_rows()}


@pytest.mark.parametrize("flag,value", REFERENCE_FLAGS, ids=[f for f, _v in REFERENCE_FLAGS])
def test_every_reference_flag_is_ours_or_not_yet(flag, value):
    assert (flag in OURS) != (flag in NOT_YET), f"{flag}: must be exactly one of ours or not yet"
    argv = ["run", *typed(flag, value)]
    if flag in OURS:
        args = build_parser().parse_args(argv)  # would exit 2 if the flag or its value were refused
        assert args.command == RUN
        dest = flag[2:].replace("-", "_")
        expected = True if value is None else value if dest == "config" else BY_NAME[dest].kind(value)
        assert getattr(args, dest) == expected
    else:
        code, out, err = call(argv)
        assert (code, out, err) == (2, "", not_yet_line(flag))


@pytest.mark.parametrize("flag", sorted(NOT_YET))
def test_not_yet_flag_is_refused_wherever_it_stands(flag):
    """The --flag=value form, after valid options, before a bad one: the same one line, before argparse."""
    for argv in (
        ["run", f"{flag}=1"],
        ["run", "--num-users", "2", flag, "--duration", "5"],
        ["run", flag, "--num-users", "0", "--no-such-flag"],
    ):
        assert call(argv) == (2, "", not_yet_line(flag)), argv


def test_not_yet_table_is_the_reference_flags_we_lack():
    reference = {f for f, _v in REFERENCE_FLAGS}
    assert set(NOT_YET) == reference - OURS
    assert not set(NOT_YET) & OURS


def test_normal_parsing_and_unknown_flags_are_unchanged():
    with pytest.raises(SystemExit) as exc:
        main(["run", "--use-burst-traces"], io.StringIO(), io.StringIO())  # a typo, not a reference flag
    assert exc.value.code == 2
    # After `--` nothing is a flag; a not-yet flag given to another command is argparse's to refuse.
    with pytest.raises(SystemExit):
        main(["run", "--", "--use-burst-trace"], io.StringIO(), io.StringIO())
    with pytest.raises(SystemExit):
        main(["datasize", "--use-burst-trace"], io.StringIO(), io.StringIO())


def test_run_help_names_the_not_yet_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "kv-cache.py flags not available yet" in help_text
    assert "--use-burst-trace" in help_text


def test_readme_table_has_a_row_per_reference_flag():
    assert readme_table_flags() >= {f for f, _v in REFERENCE_FLAGS}


def test_readme_table_says_not_yet_exactly_for_the_flags_refused_as_not_yet():
    rows = readme_table_rows()
    assert {flag for flag, ours in rows if ours == "not yet"} == set(NOT_YET)
    # A reference flag we take is its own row's kvcache flag.
    assert {flag for flag, ours in rows if ours == f"`{flag}`"} >= {f for f, _v in REFERENCE_FLAGS if f in OURS}
