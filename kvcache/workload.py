"""What simulated users ask for: templates, QoS classes, conversations, prefixes, RAG chunks and their keys.

Pure and deterministic: the same seed and user give the same sequence of requests and sizes, whatever
the threads do. The runner turns these requests into tier I/O, step by step as kv-cache.py intends:
prefix, earlier turns, prefill, RAG chunks, decode (see the README's "Request pipeline").
"""

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

# Every cache key a request names (its turn, an earlier turn, a shared prefix, a document chunk) matches
# this; `kvcache clean` recognises the engine's own entry files by it.
# (prefix-<template> is the shared prompt's key of earlier versions, whose leftovers clean removes too.)
KEY_PATTERN = r"(?:u[0-9]+c[0-9]+t[0-9]+|prefix-[a-z0-9]+|rag-d[0-9]+c[0-9]+)"
PERCENTILE_TARGETS = ("p95", "p99", "p999", "p9999")  # the QoS targets of a class, in this order
MAX_CHUNKS_PER_DOCUMENT = 100_000  # a document is a handful of chunks; this bounds a RAG request's draw


@dataclass(frozen=True)
class Template:
    """A user persona: each user draws its largest context, generation and think time from these ranges."""

    name: str
    context_tokens: Tuple[int, int]
    generation_tokens: Tuple[int, int]
    think_seconds: Tuple[float, float]


TEMPLATES = (
    Template("chatbot", (512, 4096), (50, 200), (0.1, 0.5)),
    Template("coding", (4096, 25000), (100, 500), (0.2, 1.0)),
    Template("document", (4096, 16384), (200, 800), (0.3, 1.5)),
)


@dataclass(frozen=True)
class QosClass:
    """A service class: its share of users, its queue priority (higher first) and its end-to-end targets."""

    name: str
    share: float
    priority: int
    targets_ms: Tuple[float, float, float, float]  # p95, p99, p99.9, p99.99 of the end-to-end latency

    @property
    def p95_target_ms(self) -> float:
        return self.targets_ms[0]


QOS_CLASSES = (
    QosClass("interactive", 0.15, 3, (50.0, 100.0, 150.0, 200.0)),
    QosClass("responsive", 0.35, 2, (100.0, 200.0, 350.0, 500.0)),
    QosClass("batch", 0.50, 1, (1000.0, 5000.0, 7500.0, 10000.0)),
)
# A class meets its QoS when at least this share of its requests end within its p95 target (kv-cache.py's rule).
QOS_COMPLIANCE = 0.95
GENERATION_SECONDS_PER_TOKEN = {"none": 0.0, "fast": 0.002, "realistic": 0.030}


@dataclass(frozen=True)
class WorkloadProfile:
    """The structured parts of a workload a config file may redefine (kv-cache.py's user_templates,
    qos_profiles, qos_distribution and generation_timing); the built-in values are kv-cache.py's."""

    templates: Tuple[Template, ...] = TEMPLATES
    qos_classes: Tuple[QosClass, ...] = QOS_CLASSES
    generation_timing: Tuple[Tuple[str, float], ...] = tuple(GENERATION_SECONDS_PER_TOKEN.items())

    def seconds_per_token(self, mode: str) -> float:
        return dict(self.generation_timing)[mode]

    def qos(self, name: str) -> QosClass:
        return next(q for q in self.qos_classes if q.name == name)

    def as_dict(self) -> dict:
        return {
            "templates": {
                t.name: {
                    "context_tokens": list(t.context_tokens),
                    "generation_tokens": list(t.generation_tokens),
                    "think_seconds": list(t.think_seconds),
                }
                for t in self.templates
            },
            "qos_classes": {
                q.name: {
                    "share": q.share,
                    "priority": q.priority,
                    "targets_ms": dict(zip(PERCENTILE_TARGETS, q.targets_ms)),
                }
                for q in self.qos_classes
            },
            "generation_seconds_per_token": dict(self.generation_timing),
        }


DEFAULT_PROFILE = WorkloadProfile()


def entry_bytes(tokens: int, bytes_per_token: int, tensor_parallel: int = 1) -> int:
    """The bytes of one rank's entry for `tokens`: with tensor parallelism each GPU holds 1/TP of the KV."""
    return math.ceil(tokens * bytes_per_token / tensor_parallel)


class RagCorpus:
    """The documents a rank ingests: each a number of tokens, cut into chunks that are one entry each."""

    def __init__(self, seed: int, num_docs: int, doc_tokens: Tuple[int, int], chunk_tokens: int):
        rng = random.Random(f"kvcache:{seed}:rag")
        self.chunk_tokens = chunk_tokens
        self.doc_tokens = [rng.randint(*doc_tokens) for _doc in range(num_docs)]

    @staticmethod
    def chunk_tokens_for(config, entry_bytes_per_token: float) -> int:
        """Tokens per chunk: --rag-chunk-tokens, fewer when that many would exceed --rag-max-chunk-bytes."""
        return max(1, min(config.rag_chunk_tokens, int(config.rag_max_chunk_bytes // entry_bytes_per_token)))

    def chunks(self, doc: int) -> List[Tuple[str, int]]:
        """(key, tokens) of each chunk of a document, in order; the last one holds the rest."""
        total, size = self.doc_tokens[doc], self.chunk_tokens
        return [(f"rag-d{doc}c{i}", min(size, total - start)) for i, start in enumerate(range(0, total, size))]

    def chunk_count(self, doc: int) -> int:
        return -(-self.doc_tokens[doc] // self.chunk_tokens)

    def total_tokens(self) -> int:
        return sum(self.doc_tokens)


def is_large_model(model) -> bool:
    """kv-cache.py's rule for smaller RAG documents: 64 layers or more, or a hidden size of 8192 or more."""
    return model.layers >= 64 or getattr(model, "hidden_dim", 0) >= 8192


def rag_doc_tokens(config, model) -> Tuple[int, int]:
    if is_large_model(model):
        return config.rag_large_model_doc_tokens_min, config.rag_large_model_doc_tokens_max
    return config.rag_small_model_doc_tokens_min, config.rag_small_model_doc_tokens_max


@dataclass(frozen=True)
class Settings:
    """The options that shape the requests, taken from a run's config once (see from_config)."""

    profile: WorkloadProfile = DEFAULT_PROFILE
    multi_turn: bool = True
    multi_turn_reads: str = "all"
    max_turns: int = 50
    end_probability: float = 0.2
    prefix_caching: bool = True
    prefix_probability: float = 0.2
    system_prompts: int = 3
    system_prompt_tokens: int = 1024
    rag_probability: float = 0.0  # 0 unless --enable-rag
    rag_top_k: int = 5
    rag_distribution: str = "zipfian"
    rag_docs: Tuple[int, ...] = field(default=())  # chunks of each document, when RAG is on

    @classmethod
    def from_config(cls, config, corpus: Optional[RagCorpus] = None) -> "Settings":
        rag = corpus is not None and config.enable_rag
        return cls(
            profile=config.workload,
            multi_turn=not config.disable_multi_turn,
            multi_turn_reads=config.multi_turn_reads,
            max_turns=config.max_turns,
            end_probability=config.end_conversation_probability,
            prefix_caching=not config.disable_prefix_caching,
            prefix_probability=config.prefix_hit_probability,
            system_prompts=config.system_prompts,
            system_prompt_tokens=config.system_prompt_tokens,
            rag_probability=config.rag_request_probability if rag else 0.0,
            rag_top_k=config.rag_top_k,
            rag_distribution=config.rag_retrieval_distribution,
            rag_docs=tuple(corpus.chunk_count(d) for d in range(len(corpus.doc_tokens))) if rag else (),
        )


DEFAULT_SETTINGS = Settings()


@dataclass(frozen=True)
class Request:
    user: int
    conversation: int
    turn: int
    template: str
    qos: str
    priority: int  # of its QoS class: a busy rank serves higher first
    context_tokens: int  # tokens whose KV this turn's prefill writes (its context less the shared prefix)
    generation_tokens: int
    think_seconds: float  # the user's pause before this request
    key: str  # the entry this turn writes
    earlier_keys: Tuple[str, ...]  # the earlier turns it re-reads, oldest first (multi-turn)
    prefix_key: Optional[str]  # the shared system prompt it begins with
    prefix_tokens: int
    rag_keys: Tuple[str, ...]  # the document chunks it retrieves

    @property
    def previous_key(self) -> Optional[str]:
        return self.earlier_keys[-1] if self.earlier_keys else None


def _pick(rng: random.Random, items, weight_of):
    point = rng.random() * sum(weight_of(i) for i in items)
    for item in items:
        point -= weight_of(item)
        if point < 0:
            return item
    return items[-1]


def draw_qos(rng: random.Random, profile: WorkloadProfile) -> QosClass:
    """A QoS class, by the profile's shares."""
    return _pick(rng, profile.qos_classes, lambda q: q.share)


def system_prompt(rng: random.Random, s: Settings, context: int) -> Tuple[Optional[str], int, int]:
    """(prefix key or None, prefix tokens, context tokens left to prefill) of a request of `context` tokens."""
    # Drawn whether or not prefix caching is on, so that switching it off changes nothing else.
    uses_prompt, prompt = rng.random() < s.prefix_probability, rng.randrange(s.system_prompts)
    if s.prefix_caching and uses_prompt and context > s.system_prompt_tokens:
        # The prompt is part of the request's context, not added to it.
        return f"prefix-{prompt}", s.system_prompt_tokens, context - s.system_prompt_tokens
    return None, 0, context


class User:
    """One simulated user, as kv-cache.py draws one: a template (uniform), a QoS class (by share), and its
    own largest context, generation and think time; then an endless series of conversations."""

    def __init__(self, seed: int, user_id: int, settings: Settings = DEFAULT_SETTINGS):
        self.user_id = user_id
        self.settings = settings
        self.rng = rng = random.Random(f"kvcache:{seed}:user:{user_id}")
        profile = settings.profile
        self.template = profile.templates[rng.randrange(len(profile.templates))]
        self.qos = draw_qos(rng, profile)
        self.max_context = rng.randint(*self.template.context_tokens)
        self.max_generation = rng.randint(*self.template.generation_tokens)
        self.think = rng.uniform(*self.template.think_seconds)
        self._conversation = 0
        self._turn = 0

    def _rag_keys(self) -> Tuple[str, ...]:
        s, rng = self.settings, self.rng
        if not s.rag_docs or rng.random() >= s.rag_probability:
            return ()
        doc = rng.randrange(len(s.rag_docs))
        count = s.rag_docs[doc]
        k = min(s.rag_top_k, count)
        if s.rag_distribution == "zipfian":
            # Weighted sampling without replacement, chunk i weighing 1/(i+1): the k largest u^(i+1).
            draws = [(rng.random() ** (i + 1), i) for i in range(count)]
            chosen = [i for _key, i in heapq.nlargest(k, draws)]
        else:
            chosen = rng.sample(range(count), k)
        return tuple(f"rag-d{doc}c{i}" for i in chosen)

    def requests(self) -> Iterator[Request]:
        s, rng = self.settings, self.rng
        while True:
            # A conversation goes on with each later request unless it ends first (or reached max_turns).
            if not s.multi_turn or self._turn == 0 or self._turn >= s.max_turns or rng.random() < s.end_probability:
                self._conversation += 1
                self._turn = 0
            self._turn += 1
            conv_id = f"u{self.user_id}c{self._conversation}"
            think = self.think * rng.uniform(0.8, 1.2)
            context = rng.randint(max(1, self.max_context // 4), self.max_context)
            generation = rng.randint(max(1, self.max_generation // 4), self.max_generation)
            prefix_key, prefix_tokens, context = system_prompt(rng, s, context)
            first = 1 if s.multi_turn_reads == "all" else max(1, self._turn - 1)
            yield Request(
                user=self.user_id,
                conversation=self._conversation,
                turn=self._turn,
                template=self.template.name,
                qos=self.qos.name,
                priority=self.qos.priority,
                context_tokens=context,
                generation_tokens=generation,
                think_seconds=think,
                key=f"{conv_id}t{self._turn}",
                earlier_keys=tuple(f"{conv_id}t{t}" for t in range(first, self._turn)),
                prefix_key=prefix_key,
                prefix_tokens=prefix_tokens,
                rag_keys=self._rag_keys(),
            )


class Arrivals:
    """Poisson arrivals (--request-rate): offsets in seconds from the window start, and whose request each is."""

    def __init__(self, seed: int, rate_per_s: float, num_users: int):
        self.rng = random.Random(f"kvcache:{seed}:arrivals")
        self.rate = rate_per_s
        self.num_users = num_users

    def __iter__(self) -> Iterator[Tuple[float, int]]:
        at = 0.0
        while True:
            at += self.rng.expovariate(self.rate)
            yield at, self.rng.randrange(self.num_users)


def largest_entry_tokens(config, chunk_tokens: Optional[int] = None) -> int:
    """The most tokens one entry can hold: a user's largest context, a system prompt or a document chunk."""
    longest = max(t.context_tokens[1] for t in config.workload.templates)
    if not config.disable_prefix_caching:
        longest = max(longest, config.system_prompt_tokens)
    if config.enable_rag and chunk_tokens:
        longest = max(longest, chunk_tokens)
    return longest


def mean_context_tokens(profile: WorkloadProfile = DEFAULT_PROFILE) -> float:
    """Expected tokens of one request's context: template uniform, the user's largest context L uniform in
    the template's range, the request's uniform in [L/4, L] (so 5/8 of L on average)."""
    return sum((t.context_tokens[0] + t.context_tokens[1]) / 2 * 5 / 8 for t in profile.templates) / len(
        profile.templates
    )


def mean_conversation_turns(config) -> float:
    """Expected turns of a conversation: each later request ends it with the end probability, at most max_turns."""
    if config.disable_multi_turn:
        return 1.0
    p, cap = config.end_conversation_probability, config.max_turns
    # E[min(G, cap)] for G geometric on {1, 2, ...} with continuation probability 1 - p.
    return float(cap) if p == 0 else (1 - (1 - p) ** cap) / p
