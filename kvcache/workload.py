"""What simulated users ask for: templates, QoS classes, conversations and their cache keys.

Pure and deterministic: the same seed and user give the same sequence of requests and sizes,
whatever the threads do. The runner turns these requests into tier I/O.
"""

import random
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

# Every cache key a request names (its turn, the turn before, the shared prefix) matches this; `kvcache
# clean` recognises the engine's own entry files by it.
KEY_PATTERN = r"(?:u[0-9]+c[0-9]+t[0-9]+|prefix-[a-z]+)"
GENERATION_SECONDS_PER_TOKEN = {"none": 0.0, "fast": 0.002, "realistic": 0.030}
CONVERSATION_END_PROBABILITY = 0.2
MAX_TURNS = 50


@dataclass(frozen=True)
class Template:
    name: str
    context_tokens: Tuple[int, int]
    generation_tokens: Tuple[int, int]
    think_seconds: Tuple[float, float]
    system_prompt_tokens: int
    weight: float


TEMPLATES = (
    Template("chatbot", (512, 4096), (50, 200), (0.1, 0.5), 256, 0.5),
    Template("coding", (4096, 25000), (100, 500), (0.2, 1.0), 1024, 0.3),
    Template("document", (4096, 16384), (200, 800), (0.3, 1.5), 512, 0.2),
)


@dataclass(frozen=True)
class QosClass:
    name: str
    share: float
    ttft_target_ms: float


QOS_CLASSES = (
    QosClass("interactive", 0.15, 50.0),
    QosClass("responsive", 0.35, 100.0),
    QosClass("batch", 0.50, 1000.0),
)


@dataclass(frozen=True)
class Request:
    user: int
    conversation: int
    turn: int
    template: str
    qos: str
    context_tokens: int  # tokens whose KV this turn's prefill writes
    generation_tokens: int
    think_seconds: float  # pause before this request (closed loop, latency profile)
    key: str  # the entry this turn writes
    previous_key: Optional[str]  # the earlier turn this turn re-reads (multi-turn)
    prefix_key: Optional[str]  # the shared system prompt it reads
    prefix_tokens: int


def _pick(rng: random.Random, items, weight_of):
    point = rng.random() * sum(weight_of(i) for i in items)
    for item in items:
        point -= weight_of(item)
        if point < 0:
            return item
    return items[-1]


class User:
    """One simulated user: a fixed template and QoS class, and an endless series of conversations."""

    def __init__(self, seed: int, user_id: int, multi_turn: bool = True, prefix_caching: bool = True):
        self.user_id = user_id
        self.rng = random.Random(f"kvcache:{seed}:user:{user_id}")
        self.template = _pick(self.rng, TEMPLATES, lambda t: t.weight)
        self.qos = _pick(self.rng, QOS_CLASSES, lambda q: q.share)
        self.multi_turn = multi_turn
        self.prefix_caching = prefix_caching
        self._conversation = 0
        self._turn = 0

    def requests(self) -> Iterator[Request]:
        rng, tpl = self.rng, self.template
        while True:
            if self._turn == 0 or not self.multi_turn:
                self._conversation += 1
                self._turn = 0
            self._turn += 1
            conv_id = f"u{self.user_id}c{self._conversation}"
            yield Request(
                user=self.user_id,
                conversation=self._conversation,
                turn=self._turn,
                template=tpl.name,
                qos=self.qos.name,
                context_tokens=rng.randint(*tpl.context_tokens),
                generation_tokens=rng.randint(*tpl.generation_tokens),
                think_seconds=rng.uniform(*tpl.think_seconds),
                key=f"{conv_id}t{self._turn}",
                previous_key=f"{conv_id}t{self._turn - 1}" if self._turn > 1 else None,
                prefix_key=f"prefix-{tpl.name}" if self.prefix_caching else None,
                prefix_tokens=tpl.system_prompt_tokens if self.prefix_caching else 0,
            )
            if rng.random() < CONVERSATION_END_PROBABILITY or self._turn >= MAX_TURNS:
                self._turn = 0


class Arrivals:
    """Open loop: Poisson arrival offsets (seconds from the window start) and which user each belongs to."""

    def __init__(self, seed: int, rate_per_s: float, num_users: int):
        self.rng = random.Random(f"kvcache:{seed}:arrivals")
        self.rate = rate_per_s
        self.num_users = num_users

    def __iter__(self) -> Iterator[Tuple[float, int]]:
        at = 0.0
        while True:
            at += self.rng.expovariate(self.rate)
            yield at, self.rng.randrange(self.num_users)


def largest_entry_tokens(prefix_caching: bool = True) -> int:
    """The most tokens one entry can hold: the longest context of any template, or a system prompt if longer."""
    longest = max(t.context_tokens[1] for t in TEMPLATES)
    if prefix_caching:
        longest = max(longest, max(t.system_prompt_tokens for t in TEMPLATES))
    return longest


def mean_entry_tokens() -> float:
    """Expected tokens of one turn's entry over the template mix (uniform ranges)."""
    total = sum(t.weight for t in TEMPLATES)
    return sum(t.weight / total * (t.context_tokens[0] + t.context_tokens[1]) / 2 for t in TEMPLATES)
