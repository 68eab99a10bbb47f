"""ShareGPT replay on small generated datasets: shape, turns, context growth, caps, tokenizer, rank shares,
passes and bad input."""

import dataclasses
import itertools
import json
import re
import sys
import types

import pytest

from kvcache import sharegpt
from kvcache.errors import UsageError
from kvcache.run_config import make_config
from kvcache.workload import KEY_PATTERN, Settings


def human(text):
    return {"from": "human", "value": text}


def gpt(text):
    return {"from": "gpt", "value": text}


def conversation(i, *messages):
    return {"id": f"c{i}", "conversations": list(messages)}


def plain(n_turns, ask="a" * 40, reply="b" * 20):
    """A conversation of n (human, gpt) turns: 10 and 5 tokens each at 4 characters per token."""
    return [m for _turn in range(n_turns) for m in (human(ask), gpt(reply))]


@pytest.fixture(autouse=True)
def chars_per_token(monkeypatch):
    """Token counts by kv-cache.py's characters / 4 unless a test installs a tokenizer: tiktoken may or may not
    be installed and able to load its encoding here."""
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    sharegpt.tokenizer.cache_clear()
    yield
    sharegpt.tokenizer.cache_clear()


def write(tmp_path, entries, name="data.json"):
    path = tmp_path / name
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return str(path)


def config_for(path, **values):
    return make_config("run", dataset_path=path, **values)


def replay(config, rank=0, ranks=1, count=None):
    report = {}
    requests = sharegpt.arrivals(config, rank, ranks, Settings.from_config(config), report)
    if count is not None:
        requests = itertools.islice(requests, count)
    # Copies: holding the replay's own Requests would make a third pass wait for them, as for the runner's.
    return [(at, dataclasses.replace(request)) for at, request in requests], report


def test_pairs_take_human_then_gpt_pairs_and_refuse_other_shapes():
    entry = conversation(0, human("q1"), gpt("a1"), gpt("stray"), human("x"), human("q2"), gpt("a2"))
    assert sharegpt.pairs(entry) == [("q1", "a1"), ("q2", "a2")]  # (gpt, human) is not a turn: left out
    assert sharegpt.pairs(conversation(0, human("alone"))) == []
    assert sharegpt.pairs({"id": "x"}) is None
    assert sharegpt.pairs(["not", "an", "object"]) is None
    assert sharegpt.pairs(conversation(0, {"from": "human"})) is None  # no value
    assert sharegpt.pairs(conversation(0, {"from": "human", "value": 3})) is None


def test_context_is_the_conversation_so_far_and_generation_the_reply():
    count = len
    tokens = sharegpt.turn_tokens([("x" * 100, "y" * 30), ("x" * 50, "y" * 7), ("x" * 10, "")], count)
    contexts, generations = list(tokens[0::2]), list(tokens[1::2])
    assert contexts == [100, 100 + 30 + 50, 180 + 7 + 10]
    assert generations == [30, 7, 1]  # an empty reply still generates one token


def test_context_and_generation_are_capped_as_kv_cache_py_caps_them():
    tokens = sharegpt.turn_tokens([("x" * 20000, "y" * 5000), ("x", "y")], len)
    assert list(tokens) == [sharegpt.MAX_CONTEXT_TOKENS, sharegpt.MAX_GENERATION_TOKENS, sharegpt.MAX_CONTEXT_TOKENS, 1]
    assert (sharegpt.MAX_CONTEXT_TOKENS, sharegpt.MAX_GENERATION_TOKENS) == (16384, 2048)


def test_turns_become_multi_turn_requests_in_order(tmp_path):
    path = write(tmp_path, [conversation(0, *plain(3)), conversation(1, *plain(1))])
    requests, report = replay(config_for(path, replay_cycles=1))
    assert [(at, r.key) for at, r in requests] == [
        (None, "u0c1t1"),
        (None, "u0c1t2"),
        (None, "u0c1t3"),
        (None, "u1c1t1"),
    ]
    assert all(re.fullmatch(KEY_PATTERN, r.key) for _at, r in requests)
    first, second, third = (r for _at, r in requests[:3])
    assert [r.earlier_keys for r in (first, second, third)] == [(), ("u0c1t1",), ("u0c1t1", "u0c1t2")]
    assert [r.context_tokens for r in (first, second, third)] == [10, 25, 40]
    assert {r.generation_tokens for _at, r in requests} == {5}
    assert {r.user for _at, r in requests[:3]} == {0}  # one conversation is one user: served in order
    assert all(r.think_seconds == 0 and r.prefix_key is None and not r.rag_keys for _at, r in requests)
    assert report == {
        "dataset": path,
        "tokenizer": "chars/4",
        "conversations": 2,
        "turns": 4,
        "completed_cycles": 1,
        "skipped_entries": 0,
        "read_error": None,
    }


def test_a_file_cut_short_replays_the_entries_before_the_cut(tmp_path):
    whole = json.dumps([conversation(i, *plain(1)) for i in range(3)])
    path = write(tmp_path, whole[: whole.rindex("{") + 5])  # the third entry is cut in the middle
    requests, report = replay(config_for(path, replay_cycles=2))
    keys = [r.key for _at, r in requests]
    assert keys[:2] == ["u0c1t1", "u1c1t1"] and sorted(keys[2:]) == ["u0c2t1", "u1c2t1"]
    assert report["read_error"].startswith("invalid JSON after entry 2: ")
    assert (report["conversations"], report["completed_cycles"]) == (2, 2)


def test_multi_turn_reads_follow_the_options(tmp_path):
    path = write(tmp_path, [conversation(0, *plain(5))])

    def last(**values):
        return replay(config_for(path, replay_cycles=1, **values))[0][-1][1]

    assert last().earlier_keys == ("u0c1t1", "u0c1t2", "u0c1t3", "u0c1t4")
    assert last(multi_turn_reads="previous").earlier_keys == ("u0c1t4",)
    assert last(max_turns=3).earlier_keys == ("u0c1t3", "u0c1t4")
    assert last(disable_multi_turn=True).earlier_keys == ()


def test_max_conversations_takes_the_first_entries_and_skips_malformed_ones(tmp_path):
    entries = [
        conversation(0, *plain(1)),
        {"id": "broken"},
        conversation(2, gpt("no question")),
        conversation(3, *plain(2)),
    ]
    entries += [conversation(i, *plain(1)) for i in range(4, 10)]
    path = write(tmp_path, entries)
    requests, report = replay(config_for(path, max_conversations=4, replay_cycles=1))
    assert [r.key for _at, r in requests] == ["u0c1t1", "u3c1t1", "u3c1t2"]
    assert (report["conversations"], report["turns"], report["skipped_entries"]) == (2, 3, 2)


def test_each_rank_takes_a_disjoint_share(tmp_path):
    path = write(tmp_path, [conversation(i, *plain(1 + i % 3)) for i in range(11)])
    config = config_for(path, replay_cycles=1)
    everything = {r.key for _at, r in replay(config)[0]}
    shares = [{r.key for _at, r in replay(config, rank, 3)[0]} for rank in range(3)]
    assert set.union(*shares) == everything and sum(map(len, shares)) == len(everything)
    assert {int(key[1:].split("c")[0]) % 3 for key in shares[1]} == {1}
    reports = [replay(config, rank, 3)[1] for rank in range(3)]
    assert sum(r["conversations"] for r in reports) == 11


def test_later_passes_are_new_conversations_shuffled(tmp_path):
    path = write(tmp_path, [conversation(i, *plain(2)) for i in range(30)])
    requests, report = replay(config_for(path, replay_cycles=3))
    assert report["completed_cycles"] == 3 and report["turns"] == 180 and report["conversations"] == 30
    keys = [r.key for _at, r in requests]
    assert len(set(keys)) == 180  # each pass writes its own entries
    order = [[r.user for _at, r in requests[p * 60 : (p + 1) * 60 : 2]] for p in range(3)]
    assert order[0] == list(range(30)) and sorted(order[1]) == list(range(30)) and order[1] != order[0]
    assert {r.conversation for _at, r in requests[60:120]} == {2}


def test_replay_cycles_0_goes_on_until_stopped(tmp_path):
    path = write(tmp_path, [conversation(0, *plain(1))])
    requests, report = replay(config_for(path), count=50)
    assert [r.key for _at, r in requests[:3]] == ["u0c1t1", "u0c2t1", "u0c3t1"]
    assert report["completed_cycles"] == 49  # the 50th pass was handed on, but the runner did not ask for more yet


def test_a_rank_without_conversations_replays_nothing(tmp_path):
    path = write(tmp_path, [conversation(0, *plain(1))])
    requests, report = replay(config_for(path), rank=1, ranks=2)  # replay cycles 0: must still end
    assert requests == [] and (report["conversations"], report["turns"], report["completed_cycles"]) == (0, 0, 0)


def test_request_rate_paces_the_turns(tmp_path):
    path = write(tmp_path, [conversation(0, *plain(2)), conversation(1, *plain(2))])
    requests, _report = replay(config_for(path, request_rate=4.0, replay_cycles=1))
    assert [at for at, _r in requests] == [0.0, 0.25, 0.5, 0.75]


def test_qos_classes_follow_the_profile_and_the_seed(tmp_path):
    path = write(tmp_path, [conversation(i, *plain(1)) for i in range(200)])
    first = [r.qos for _at, r in replay(config_for(path, replay_cycles=1, seed=7))[0]]
    assert first == [r.qos for _at, r in replay(config_for(path, replay_cycles=1, seed=7))[0]]
    assert set(first) == {"interactive", "responsive", "batch"}
    assert first.count("batch") > first.count("interactive")


def test_tiktoken_counts_when_its_encoding_loads(tmp_path, monkeypatch):
    encoding = types.SimpleNamespace(encode_ordinary=lambda text: text.split())
    fake = types.SimpleNamespace(get_encoding=lambda name: encoding if name == "cl100k_base" else None)
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    path = write(tmp_path, [conversation(0, human("three words here"), gpt("two words"))])
    requests, report = replay(config_for(path, replay_cycles=1))
    assert report["tokenizer"] == "tiktoken cl100k_base"
    assert (requests[0][1].context_tokens, requests[0][1].generation_tokens) == (3, 2)


def test_characters_per_token_when_the_encoding_cannot_load(tmp_path, monkeypatch):
    def offline(_name):
        raise ConnectionError("no route to the encoding's download")

    monkeypatch.setitem(sys.modules, "tiktoken", types.SimpleNamespace(get_encoding=offline))
    path = write(tmp_path, [conversation(0, human("x" * 41), gpt("y" * 9))])
    requests, report = replay(config_for(path, replay_cycles=1))
    assert report["tokenizer"] == "chars/4"
    assert (requests[0][1].context_tokens, requests[0][1].generation_tokens) == (10, 2)


def test_check_accepts_a_dataset(tmp_path):
    sharegpt.check(config_for(write(tmp_path, [conversation(0, *plain(2))])))


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "is not valid JSON"),
        ("[{", "is not valid JSON"),
        ('{"conversations": []}', "not a JSON list of conversations"),
        ('"text"', "not a JSON list of conversations"),
        ("[1, 2]", "its first entry is not"),
        ('[{"id": "x", "conversations": [{"from": "human"}]}]', "its first entry is not"),
        ("[]", "no usable conversation"),
        (json.dumps([conversation(0, gpt("reply first"), human("late"))]), "no usable conversation"),
    ],
)
def test_check_refuses_a_file_of_the_wrong_shape(tmp_path, content, message):
    with pytest.raises(UsageError, match=f"^--dataset-path: .*{message}") as caught:
        sharegpt.check(config_for(write(tmp_path, content)))
    assert len(str(caught.value)) < 300


def test_check_refuses_a_missing_path_or_a_directory(tmp_path):
    with pytest.raises(UsageError, match="^--dataset-path: .*does not exist"):
        sharegpt.check(config_for(str(tmp_path / "missing.json")))
    with pytest.raises(UsageError, match="^--dataset-path: .*is not a regular file"):
        sharegpt.check(config_for(str(tmp_path)))


def test_check_names_the_extra_when_ijson_is_missing(tmp_path, monkeypatch):
    path = write(tmp_path, [conversation(0, *plain(1))])
    monkeypatch.setitem(sys.modules, "ijson", None)
    with pytest.raises(
        UsageError, match=r"^--dataset-path: .*needs ijson: pip install 'storagebench-kvcache\[sharegpt\]'"
    ):
        sharegpt.check(config_for(path))
