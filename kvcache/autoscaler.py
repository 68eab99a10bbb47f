"""The autoscaler: from what one step of the window measured, the user count of the next step.

Pure: the engine runs the steps, measures them, pools the fleet's numbers on rank 0 and passes them
here one step at a time (StepMeasure); the search answers with a Decision that every rank applies. No
threads, no clocks, no I/O: the same measurements give the same decisions.

Counts are users per rank (every rank runs the same count; the fleet's count is that x ranks), always
within --autoscaler-min-users .. --autoscaler-max-users. The first step runs --num-users, clamped to
that range. "Grow" from n means min(max users, max(n + 1, ceil(n x --autoscaler-scale-up-factor))).

qos (--autoscaler-mode qos): the largest count at which every QoS class keeps its latency.
- A step holds when at least one request completed in it and, for every class with completed
  requests, the pooled p95 end-to-end latency of the step is at most --target-saturation x that
  class's p95 target. A class with no completed request is not judged; a step in which no request
  completed misses (its requests took longer than the step).
- The search keeps the largest count that held (lo) and the smallest that missed (hi).
- Holds: while nothing has missed, grow; holding at --autoscaler-max-users ends the search ("cap":
  the answer is at least the cap, not found).
- Misses: while nothing has held, shrink to max(min users, min(n - 1, floor(n x
  --autoscaler-scale-down-factor))); missing at --autoscaler-min-users ends it ("nothing_holds").
- Once a count held and one missed: the midpoint (lo + hi) // 2 ("bisect"), until hi - lo <= 1, when
  the search has converged: lo is the answer.

capacity (--autoscaler-mode capacity): where storage bandwidth stops growing with users.
- A step's bandwidth is its storage read + write bytes per second. It gains when it beats the best
  bandwidth so far by more than --autoscaler-min-gain (the first step always gains); the last count
  that gained is the knee.
- After each step the count grows; --autoscaler-plateau-steps steps in a row without a gain end the
  search (converged); reaching --autoscaler-max-users first ends it at the cap, not converged.
- The answer: the count of the step with the highest bandwidth (the peak), and the knee.

Either mode: a step in which a rank failed ends the search ("failed"), and a window that ends before
the search did leaves it unconverged ("window"): the result then reports what held and what missed,
never a maximum it did not observe.
"""

import abc
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from kvcache import replay
from kvcache.errors import UsageError
from kvcache.options import BY_NAME
from kvcache.units import GIB

ENDED_BECAUSE = ("converged", "cap", "nothing_holds", "window", "failed")
ROUNDING = 9  # decimals kept of n x factor before ceil/floor: 50 x 1.1 is 55.00000000000001, not 56 users


def _flag(name: str) -> str:
    return BY_NAME[name].flag


def check(config) -> None:
    """Refuse, before anything is created, what the search cannot run with. Nothing when autoscaling is off."""
    if not config.enable_autoscaling:
        return
    if config.autoscaler_min_users > config.autoscaler_max_users:
        raise UsageError(
            _flag("autoscaler_min_users"),
            f"{config.autoscaler_min_users} is more than --autoscaler-max-users {config.autoscaler_max_users}: "
            "give min <= max",
        )
    if config.request_rate > 0:
        raise UsageError(
            _flag("request_rate"),
            "its arrivals, not the users, make the load, and autoscaling changes the users: give one of them",
        )
    kind = replay.kind(config)
    if kind is not None:
        flag = _flag("dataset_path" if kind == "sharegpt" else "use_burst_trace")
        raise UsageError(flag, "a replay's arrivals, not the users, make the load: drop it or --enable-autoscaling")
    if config.max_requests > 0:
        raise UsageError(
            _flag("max_requests"),
            "a request count would end the window and cut the search's steps short: give 0 with autoscaling",
        )
    if config.io_trace_log is not None:
        raise UsageError(
            _flag("io_trace_log"),
            "a trace run does no storage I/O, so a step has nothing to measure: give one of them",
        )
    if config.duration < 2 * config.autoscaler_step_s:
        raise UsageError(
            _flag("duration"),
            f"{config.duration:g} s is less than 2 steps of --autoscaler-step-s {config.autoscaler_step_s:g} s: "
            "the search needs at least two steps",
        )


def start_users(config) -> int:
    """The first step's users per rank: --num-users within [--autoscaler-min-users, --autoscaler-max-users]."""
    return min(max(config.num_users, config.autoscaler_min_users), config.autoscaler_max_users)


def qos_targets_ms(config) -> Dict[str, float]:
    """{class: p95 target in ms} of every QoS class of the run's workload profile, in its order."""
    return {q.name: q.p95_target_ms for q in config.workload.qos_classes}


@dataclass(frozen=True)
class StepMeasure:
    """What one step measured, pooled over the fleet. Times are seconds from the shared window start."""

    step: int
    t_start_s: float
    t_end_s: float
    users_per_rank: int
    ranks: int
    requests: int  # completed in the step, fleet
    read_bytes_per_s: float  # storage tier, fleet
    write_bytes_per_s: float
    p95_ms: Dict[str, float] = field(default_factory=dict)  # end-to-end, per class with completed requests
    failed: Optional[str] = None  # a rank's failure in the step (the first one)


@dataclass(frozen=True)
class Decision:
    """The users per rank of the next step (the current count when stopping), and why."""

    users_per_rank: int
    stop: bool
    action: str  # grow | shrink | bisect | stop
    reason: str


def _users(count: Optional[int], ranks: int) -> Optional[dict]:
    return None if count is None else {"per_rank": count, "fleet": count * ranks}


def _gib_s(bytes_per_s: float) -> str:
    return f"{bytes_per_s / GIB:.2f} GiB/s"


class Autoscaler(abc.ABC):
    """The search of one run: decide() once per step, in order, until a Decision stops it; then outcome()."""

    mode = ""

    def __init__(self, config, ranks: int):
        self.step_s = config.autoscaler_step_s
        self.ranks = ranks
        self.start = start_users(config)
        self.min_users = config.autoscaler_min_users
        self.max_users = config.autoscaler_max_users
        self.up = config.autoscaler_scale_up_factor
        self.steps: List[dict] = []
        self.ended_because: Optional[str] = None  # set by the Decision that stops the search
        self.failure: Optional[str] = None  # the failure of the step that stopped it

    @staticmethod
    def for_config(config, ranks: int, qos_targets_ms: Dict[str, float]) -> "Autoscaler":
        """The search --autoscaler-mode names. qos_targets_ms: {class: p95 target} of every class."""
        if config.autoscaler_mode == "capacity":
            return CapacitySearch(config, ranks)
        return QosSearch(config, ranks, qos_targets_ms)

    @property
    @abc.abstractmethod
    def condition(self) -> str:
        """The rule in words, with the numbers."""

    def grown(self, n: int) -> int:
        return min(self.max_users, max(n + 1, math.ceil(round(n * self.up, ROUNDING))))

    def decide(self, step: StepMeasure) -> Decision:
        if self.ended_because is not None:
            raise RuntimeError(f"the search has ended ({self.ended_because}): no decision after it")
        if step.failed is not None:
            judged = {"saturation": None, "holds": None, "gain": None}  # a failed step's numbers are not judged
            self.failure = step.failed
            decision = self._stop(step, "failed", f"step {step.step} failed ({step.failed}): stop")
        else:
            judged, decision = self._judge(step)
        self.steps.append(
            {
                "step": step.step,
                "t_start_s": step.t_start_s,
                "t_end_s": step.t_end_s,
                "users_per_rank": step.users_per_rank,
                "users_total": step.users_per_rank * self.ranks,
                "requests": step.requests,
                "read_bytes_per_s": step.read_bytes_per_s,
                "write_bytes_per_s": step.write_bytes_per_s,
                "p95_ms": dict(step.p95_ms),
                **judged,
                "action": decision.action,
                "next_users_per_rank": decision.users_per_rank,
                "reason": decision.reason,
            }
        )
        return decision

    @abc.abstractmethod
    def _judge(self, step: StepMeasure):
        """(the step's saturation/holds/gain fields, the Decision) for a step without failure."""

    def _stop(self, step: StepMeasure, ended_because: str, reason: str) -> Decision:
        self.ended_because = ended_because
        return Decision(step.users_per_rank, True, "stop", reason)

    def outcome(self, ended_because: Optional[str] = None) -> dict:
        """The result's `autoscaling` block. ended_because: why the window ended when no Decision stopped the
        search ("window": --duration ran out; "failed"). A search that stopped keeps its own reason: the
        Decision at the last step wins over the window's end."""
        ended = self.ended_because or ended_because
        if ended not in ENDED_BECAUSE:
            raise ValueError(f"ended_because must be one of {', '.join(ENDED_BECAUSE)}, got {ended!r}")
        block = {
            "mode": self.mode,
            "step_s": self.step_s,
            "ranks": self.ranks,
            "start_users_per_rank": self.start,
            "min_users_per_rank": self.min_users,
            "max_users_per_rank": self.max_users,
            "condition": self.condition,
            "converged": ended == "converged",
            "ended_because": ended,
            "search_s": self.steps[-1]["t_end_s"] if self.steps else 0.0,
            "steps": [dict(s) for s in self.steps],
        }
        block.update(self._answer(ended, block["search_s"]))
        return block

    @abc.abstractmethod
    def _answer(self, ended: str, search_s: float) -> dict:
        """The mode's answer fields and the summary line."""

    def _failed_part(self) -> str:
        if self.failure is not None:
            return f"step {self.steps[-1]['step']} failed ({self.failure})"
        return f"the run failed after step {self.steps[-1]['step']}" if self.steps else "the run failed before a step"


class QosSearch(Autoscaler):
    """The largest users per rank at which every QoS class's p95 stays within its share of the target."""

    mode = "qos"

    def __init__(self, config, ranks: int, qos_targets_ms: Dict[str, float]):
        super().__init__(config, ranks)
        self.targets_ms = dict(qos_targets_ms)
        self.saturation = config.target_saturation
        self.down = config.autoscaler_scale_down_factor
        self.lo: Optional[int] = None  # the largest count that held
        self.hi: Optional[int] = None  # the smallest count that missed

    @property
    def condition(self) -> str:
        targets = ", ".join(f"{name} {ms:g} ms" for name, ms in self.targets_ms.items())
        return (
            f"every QoS class's p95 end-to-end latency at most {self.saturation:g} x its target ({targets}) "
            f"over a {self.step_s:g} s step"
        )

    def _verdict(self, step: StepMeasure):
        """(saturation or None, holds, the phrase that says why)."""
        ratios = {}
        for name, p95 in step.p95_ms.items():
            if name not in self.targets_ms:
                raise ValueError(f"QoS class {name!r} of step {step.step} has no p95 target")
            ratios[name] = p95 / self.targets_ms[name]
        if step.requests <= 0 or not ratios:
            return None, False, f"no request completed in the {step.t_end_s - step.t_start_s:g} s step"
        worst = max(ratios, key=ratios.get)
        saturation = ratios[worst]
        holds = saturation <= self.saturation
        shown = f"{worst} p95 {step.p95_ms[worst]:.1f} ms {'<=' if holds else '>'} {self.saturation:g} x "
        shown += f"{self.targets_ms[worst]:g} ms"
        return saturation, holds, shown + (" and every class holds" if holds else "")

    def _judge(self, step: StepMeasure):
        n = step.users_per_rank
        saturation, holds, why = self._verdict(step)
        judged = {"saturation": saturation, "holds": holds, "gain": None}
        if holds:
            self.lo = n if self.lo is None else max(self.lo, n)
            if self.hi is None:
                if n >= self.max_users:
                    return judged, self._stop(step, "cap", f"{why} at the cap of {n} users/rank: stop")
                return judged, self._next(n, self.grown(n), "grow", why)
        else:
            self.hi = n if self.hi is None else min(self.hi, n)
            if self.lo is None:
                if n <= self.min_users:
                    reason = f"{why} at the fewest, {n} users/rank: stop, nothing holds"
                    return judged, self._stop(step, "nothing_holds", reason)
                shrunk = max(self.min_users, min(n - 1, math.floor(round(n * self.down, ROUNDING))))
                return judged, self._next(n, shrunk, "shrink", why)
        if self.hi - self.lo <= 1:
            reason = f"{why}: {self.lo} users/rank held and {self.hi} missed: stop, {self.lo} is the most that holds"
            return judged, self._stop(step, "converged", reason)
        return judged, self._next(n, (self.lo + self.hi) // 2, "bisect", why)

    @staticmethod
    def _next(n: int, users: int, action: str, why: str) -> Decision:
        return Decision(users, False, action, f"{why}: {n} -> {users} users/rank")

    def _bounds(self) -> str:
        held = f"{self.lo} users/rank held" if self.lo is not None else "no count held"
        missed = f"{self.hi} missed" if self.hi is not None else "none missed"
        return f"{held}, {missed}"

    def _answer(self, ended: str, search_s: float) -> dict:
        fleet = self.ranks
        if ended == "converged":
            summary = (
                f"max {self.lo} users/rank (fleet {self.lo * fleet}) with {self.condition}; {self.hi} users/rank missed"
            )
        elif ended == "cap":
            summary = (
                f"not converged: {self.lo} users/rank (fleet {self.lo * fleet}) held at the cap "
                f"(--autoscaler-max-users); the most that holds is at least that, with {self.condition}"
            )
        elif ended == "nothing_holds":
            summary = (
                f"no user count holds: even {self.hi} users/rank (fleet {self.hi * fleet}, the fewest allowed) "
                f"missed; the condition: {self.condition}"
            )
        elif ended == "window":
            summary = f"not converged in {round(search_s, 1):g} s: {self._bounds()}; give a longer --duration"
        else:
            summary = f"not converged: {self._failed_part()}; {self._bounds()}"
        return {
            "max_users": _users(self.lo, fleet) if ended == "converged" else None,
            "largest_held": _users(self.lo, fleet),
            "smallest_missed": _users(self.hi, fleet),
            "summary": summary,
        }


class CapacitySearch(Autoscaler):
    """The users per rank at which storage bandwidth (read + write) stops growing."""

    mode = "capacity"

    def __init__(self, config, ranks: int):
        super().__init__(config, ranks)
        self.min_gain = config.autoscaler_min_gain
        self.plateau_steps = config.autoscaler_plateau_steps
        self.best: Optional[float] = None
        self.knee: Optional[int] = None
        self.knee_bandwidth = 0.0
        self.plateau = 0
        self.peak: Optional[Tuple[int, float]] = None  # (users per rank, bandwidth) of the fastest step

    @property
    def condition(self) -> str:
        return (
            f"storage read + write bandwidth, grown until {self.plateau_steps} step(s) of {self.step_s:g} s "
            f"in a row beat the best so far by at most {self.min_gain * 100:g} %"
        )

    def _judge(self, step: StepMeasure):
        n = step.users_per_rank
        bandwidth = step.read_bytes_per_s + step.write_bytes_per_s
        # The gain over the best so far; None on the first step and while the best is 0 (no ratio to take).
        gain = bandwidth / self.best - 1 if self.best else None
        if self.peak is None or bandwidth > self.peak[1]:
            self.peak = (n, bandwidth)
        if self.best is None or bandwidth > self.best * (1 + self.min_gain):
            self.best, self.knee, self.knee_bandwidth, self.plateau = bandwidth, n, bandwidth, 0
            why = f"{_gib_s(bandwidth)} gains"
        else:
            self.plateau += 1
            why = (
                f"{_gib_s(bandwidth)} is within {self.min_gain * 100:g} % of the best {_gib_s(self.best)} "
                f"({self.plateau} of {self.plateau_steps} steps without a gain)"
            )
        judged = {"saturation": None, "holds": None, "gain": gain}
        if self.plateau >= self.plateau_steps:
            return judged, self._stop(step, "converged", f"{why}: stop, the knee is {self.knee} users/rank")
        if n >= self.max_users:
            return judged, self._stop(step, "cap", f"{why} at the cap of {n} users/rank: stop")
        users = self.grown(n)
        return judged, Decision(users, False, "grow", f"{why}: {n} -> {users} users/rank")

    def _point(self, users: int, bandwidth: float) -> dict:
        return {**_users(users, self.ranks), "bandwidth_bytes_per_s": bandwidth}

    def _answer(self, ended: str, search_s: float) -> dict:
        peak = self.peak
        peak_point = self._point(*peak) if peak else None
        knee_point = self._point(self.knee, self.knee_bandwidth) if self.knee is not None else None
        if peak is None:
            observed = "no step measured"
        else:
            observed = (
                f"peak {_gib_s(peak[1])} at {peak[0]} users/rank (fleet {peak[0] * self.ranks}), "
                f"knee {self.knee} users/rank ({_gib_s(self.knee_bandwidth)})"
            )
        if ended == "converged":
            summary = f"{observed}: {self.condition}"
        elif ended == "cap":
            summary = f"not converged: the cap of {self.max_users} users/rank came first; {observed}"
        elif ended == "window":
            summary = f"not converged in {round(search_s, 1):g} s: {observed}; give a longer --duration"
        else:
            summary = f"not converged: {self._failed_part()}; {observed}"
        return {"peak_bandwidth_users": peak_point, "knee_users": knee_point, "summary": summary}
