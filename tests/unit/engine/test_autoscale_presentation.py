"""How a result shows its autoscaling search: the summary's section, the headline's line and figure, `kvcache
report`, and the schema that admits the block (and the per-rank and time-series fields).

The blocks come from the real controller (kvcache/autoscaler.py) driven by synthetic steps, so the presentation
is tested on what the engine writes; the base result comes from build_result.
"""

import copy
import io
import json

import jsonschema
import pytest
from built_results import two_rank_result
from field_paths import field_paths

from kvcache import autoscaler, result_reader
from kvcache.autoscaler import Autoscaler, StepMeasure
from kvcache.cli import main
from kvcache.errors import UsageError
from kvcache.headline import headline_figures, headline_lines
from kvcache.run_config import make_config
from kvcache.summary import format_summary
from kvcache.units import GIB

STEP_S = 10.0
RANKS = 2
VALIDATOR = jsonschema.Draft202012Validator(result_reader.result_schema())


def search(**values):
    cfg = make_config("run", enable_autoscaling=True, autoscaler_step_s=STEP_S, num_users=8, **values)
    return Autoscaler.for_config(cfg, RANKS, autoscaler.qos_targets_ms(cfg))


def measure(index, users, p95_ms=None, read=0.0, write=0.0, requests=100):
    return StepMeasure(index, index * STEP_S, (index + 1) * STEP_S, users, RANKS, requests, read, write, p95_ms or {})


def qos_block(steps, ended_because="window"):
    """The qos search's block after steps of (interactive p95 ms) at the counts the search asks for."""
    scaler, users = search(), 8
    for index, interactive_ms in enumerate(steps):
        decision = scaler.decide(measure(index, users, {"interactive": interactive_ms, "batch": 100.0}))
        users = decision.users_per_rank
        if decision.stop:
            break
    return scaler.outcome(ended_because)


def qos_converged():
    # 8 holds, 16 misses, 12 holds, 14 misses, 13 holds: 13 is the most that holds.
    return qos_block([10.0, 90.0, 20.0, 60.0, 30.0])


def capacity_block():
    scaler, users = search(autoscaler_mode="capacity"), 8
    for index, gib in enumerate([1.0, 2.0, 2.05, 2.0]):
        decision = scaler.decide(measure(index, users, read=gib * GIB, write=0.0))
        users = decision.users_per_rank
        if decision.stop:
            break
    return scaler.outcome("window")


def with_block(block):
    result = two_rank_result()
    result["autoscaling"] = block
    for rank in result["per_rank"]:
        rank["users_timeline"] = [[0.0, 8], [10.0, 16]]
    result["timeseries"] = [{"t_s": 1.0, "ranks": RANKS, "users": 16}]
    return result


def section(summary: str):
    """The summary's autoscaling section: from its first line to the next blank line or warning."""
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("autoscaling (") and i > 0 and not lines[i - 1])
    end = next((i for i in range(start, len(lines)) if not lines[i] or lines[i].startswith("warning: ")), len(lines))
    return lines[start:end]


def table(shown):
    """(the step table's header, its rows) of a section."""
    header = next(i for i, line in enumerate(shown) if line.split()[:1] == ["step"])
    return shown[header], shown[header + 1 :]


def test_qos_converged_block_shows_the_answer_condition_and_every_step():
    block = qos_converged()
    assert block["converged"] and block["max_users"] == {"per_rank": 13, "fleet": 26}  # the controller's answer
    result = with_block(block)
    figures = headline_figures(result)
    assert figures["autoscaling"] == block["summary"] and figures["autoscaling_mode"] == "qos"
    assert headline_lines(figures)[-1] == f"autoscaling (qos): {block['summary']}"
    assert block["summary"].startswith("max 13 users/rank (fleet 26)")
    summary = format_summary(result)
    assert "users/rank 8 at the start (autoscaling, below)" in summary
    shown = section(summary)
    assert shown[0] == "autoscaling (qos): 5 step(s) of 10 s in 50.0 s, ended: converged"
    assert shown[1] == f"answer: {block['summary']}"
    assert block["condition"] in block["summary"]  # so the section does not say it twice
    assert not any(line.startswith("condition: ") for line in shown)
    header, rows = table(shown)
    header = header.split()
    # The classes any step measured, in the workload's order (responsive completed nothing: no column).
    judged = " ".join(header[header.index("write") + 2 :])
    assert judged == "interactive p95 batch p95 holds action (p95: end-to-end ms)"
    rows = [line.split() for line in rows]
    assert len(rows) == len(block["steps"]) == 5
    assert [row[2] for row in rows] == ["8", "16", "12", "14", "13"]  # users/rank
    assert [row[3] for row in rows] == ["16", "32", "24", "28", "26"]  # fleet
    assert [row[8] for row in rows] == ["yes", "no", "yes", "no", "yes"]  # holds
    assert [row[6] for row in rows] == ["10.00", "90.00", "20.00", "60.00", "30.00"]  # interactive p95
    assert rows[0][1] == "0.0-10.0"


def test_qos_step_actions_and_bandwidth_columns():
    block = qos_converged()
    block["steps"][0].update(read_bytes_per_s=3 * GIB, write_bytes_per_s=GIB / 2)
    _header, rows = table(section(format_summary(with_block(block))))
    # 8 held, so the miss at 16 bisects at once: no shrink.
    actions = [row.split("  ")[-1] for row in rows]
    assert actions == ["grow -> 16", "bisect -> 12", "bisect -> 14", "bisect -> 13", "stop"]
    assert rows[0].split()[4:6] == ["3.000", "0.500"]  # read and write GiB/s of the fleet


def test_qos_not_converged_never_shows_a_maximum():
    block = qos_block([10.0, 90.0])  # 8 held, 16 missed, then the window ended
    assert block["ended_because"] == "window" and block["max_users"] is None
    result = with_block(block)
    line = headline_lines(headline_figures(result))[-1]
    assert line == "autoscaling (qos): not converged in 20 s: 8 users/rank held, 16 missed; give a longer --duration"
    shown = section(format_summary(result))
    assert shown[:2] == ["autoscaling (qos): 2 step(s) of 10 s in 20.0 s, ended: window", f"answer: {block['summary']}"]
    assert shown[2] == f"condition: {block['condition']}"  # the answer does not say it: the section does
    assert "max" not in " ".join(shown[:3])
    assert shown[-1].endswith("  bisect -> 12")  # what the search would have run next


def test_capacity_block_shows_the_gain_instead_of_latencies():
    block = capacity_block()
    assert block["ended_because"] == "converged" and block["knee_users"]["per_rank"] == 16
    result = with_block(block)
    assert headline_lines(headline_figures(result))[-1] == f"autoscaling (capacity): {block['summary']}"
    header, rows = table(section(format_summary(result)))
    assert header.split()[-2:] == ["gain", "action"] and "p95" not in header
    rows = [line.split() for line in rows]
    # The gain is over the best so far: 2.05 did not gain enough to become it, so 2.0 is +0.0 % of 2.0.
    assert [row[-4] if row[-1] != "stop" else row[-2] for row in rows] == ["-", "+100.0%", "+2.5%", "+0.0%"]
    assert [row[4] for row in rows] == ["1.000", "2.000", "2.050", "2.000"]
    assert [row[2] for row in rows] == ["8", "16", "32", "64"]


def test_without_the_block_nothing_about_autoscaling_is_shown():
    plain = two_rank_result()
    figures = headline_figures(plain)
    assert figures["autoscaling"] is None and figures["autoscaling_mode"] is None
    assert not any("autoscaling" in line for line in headline_lines(figures))
    summary = format_summary(plain)
    assert "autoscaling" not in summary and "users/rank 8  io engine direct" in summary
    # The block adds its headline line and its section and changes the users line, nothing else.
    scaled = format_summary(with_block(qos_converged())).splitlines()
    shown = section("\n".join(scaled))
    start = scaled.index(shown[0])
    kept = scaled[: start - 1] + scaled[start + len(shown) :]
    kept = [line for line in kept if not line.startswith("autoscaling (")]
    assert [line.replace(" at the start (autoscaling, below)", "") for line in kept] == summary.splitlines()


def test_report_prints_the_section_the_headline_line_and_the_figure(tmp_path):
    result = with_block(qos_converged())
    path = tmp_path / "R.json"
    path.write_text(json.dumps(result))
    out = io.StringIO()
    assert main(["report", str(path)], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue() == f"== {path}\n{format_summary(result)}\n"
    assert "\nanswer: max 13 users/rank (fleet 26)" in out.getvalue()
    out = io.StringIO()
    assert main(["report", "--headline", str(path)], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue().splitlines()[-1] == f"autoscaling (qos): {result['autoscaling']['summary']}"
    out = io.StringIO()
    assert main(["report", "--json", str(path)], stdout=out, stderr=io.StringIO()) == 0
    assert json.loads(out.getvalue())[0]["headline"]["autoscaling"] == result["autoscaling"]["summary"]


@pytest.mark.parametrize("make", [qos_converged, lambda: qos_block([10.0, 90.0]), capacity_block])
def test_the_schema_admits_the_block_and_the_new_fields(make):
    result = with_block(make())
    assert list(VALIDATOR.iter_errors(result)) == []
    assert result_reader.first_problem(result) is None


def test_an_older_result_without_the_block_is_read(tmp_path):
    path = tmp_path / "R.json"
    path.write_text(json.dumps(two_rank_result()))
    assert "autoscaling" not in result_reader.load_result(str(path))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: r["autoscaling"].update(converged="yes"), "autoscaling.converged has the wrong type"),
        (lambda r: r["autoscaling"].update(mode="fast"), "autoscaling.mode must be one of qos, capacity"),
        (lambda r: r["autoscaling"].update(max_users=13), "autoscaling.max_users has the wrong type"),
        (lambda r: r["autoscaling"]["steps"][1].update(holds="no"), "autoscaling.steps[1].holds has the wrong type"),
        (lambda r: r["autoscaling"]["steps"][0].pop("reason"), "no autoscaling.steps[0].reason"),
        (lambda r: r["autoscaling"].pop("summary"), "no autoscaling.summary"),
        (lambda r: r["per_rank"][1].update(users_timeline=[[0.0, 8.5]]), "per_rank[1].users_timeline[0][1] has"),
        (lambda r: r["per_rank"][0].update(users_timeline=[[0.0]]), "must have at least 2 items, got 1"),
        (lambda r: r["per_rank"][0].update(users_timeline=[[0.0, 8, 9]]), "must have at most 2 items, got 3"),
        (lambda r: r["timeseries"][0].update(users="16"), "timeseries[0].users has the wrong type"),
    ],
)
def test_the_schema_refuses_a_damaged_block_and_names_the_field(tmp_path, damage, message):
    result = with_block(qos_converged())
    damage(result)
    assert list(VALIDATOR.iter_errors(result))  # the reference validator refuses it too
    path = tmp_path / "R.json"
    path.write_text(json.dumps(result))
    with pytest.raises(UsageError) as refused:
        result_reader.load_result(str(path))
    assert message in str(refused.value)


def test_the_reader_agrees_with_jsonschema_on_damaged_blocks():
    """Every field of the block and of the new fields, replaced by values of other types or deleted."""
    result = with_block(qos_converged())

    roots = [("autoscaling",), ("per_rank", 0, "users_timeline"), ("timeseries", 0, "users")]
    checked = 0
    for root in roots:
        target = result
        for key in root:
            target = target[key]
        for path in [root, *field_paths(target, root, items_per_list=2)]:
            for replacement in ("abc", [1], [0.5, 2], None, -1, 2.5, True, {}):
                damaged = copy.deepcopy(result)
                parent = damaged
                for key in path[:-1]:
                    parent = parent[key]
                if replacement is None and isinstance(parent, dict):
                    del parent[path[-1]]
                elif replacement is not None:
                    parent[path[-1]] = replacement
                valid = not list(VALIDATOR.iter_errors(damaged))
                assert (result_reader.first_problem(damaged) is None) == valid, (path, replacement)
                checked += 1
    assert checked > 500
