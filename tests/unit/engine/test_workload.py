"""The workload is pure and deterministic: same seed and user, same requests."""

import itertools
import os
import subprocess
import sys

import pytest

from kvcache.workload import (
    CONVERSATION_END_PROBABILITY,
    MAX_TURNS,
    QOS_CLASSES,
    TEMPLATES,
    Arrivals,
    User,
    mean_entry_tokens,
)

TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}
QOS_NAMES = {q.name for q in QOS_CLASSES}


def take(user, n):
    return list(itertools.islice(user.requests(), n))


def test_same_seed_and_user_give_identical_requests():
    first = take(User(42, 3), 300)
    second = take(User(42, 3), 300)
    assert first == second
    assert [r.key for r in first] == [r.key for r in second]
    assert [r.context_tokens for r in first] == [r.context_tokens for r in second]


def test_different_seeds_differ():
    a = [(r.context_tokens, r.generation_tokens, r.think_seconds) for r in take(User(42, 3), 50)]
    b = [(r.context_tokens, r.generation_tokens, r.think_seconds) for r in take(User(43, 3), 50)]
    assert a != b


def test_different_users_differ_and_keys_do_not_collide():
    keys = {}
    for user_id in range(50):
        requests = take(User(1, user_id), 40)
        assert all(r.user == user_id for r in requests)
        for r in requests:
            assert r.key not in keys, f"{r.key} of user {user_id} also made by user {keys.get(r.key)}"
            keys[r.key] = user_id
    sizes = {tuple(r.context_tokens for r in take(User(1, u), 5)) for u in range(10)}
    assert len(sizes) > 1


def test_sequence_is_the_same_in_another_process():
    """Seeding must not depend on PYTHONHASHSEED or anything else of the process."""
    here = [(r.key, r.context_tokens, r.generation_tokens) for r in take(User(7, 2), 20)]
    code = (
        "import itertools; from kvcache.workload import User;"
        "print([(r.key, r.context_tokens, r.generation_tokens) "
        "for r in itertools.islice(User(7, 2).requests(), 20)])"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr(here)


def test_multi_turn_chain():
    requests = take(User(5, 1), 2000)
    conversations = set()
    for before, after in zip(requests, requests[1:]):
        if after.turn == 1:
            assert after.conversation == before.conversation + 1
            assert after.previous_key is None
        else:
            assert after.conversation == before.conversation
            assert after.turn == before.turn + 1
            assert after.previous_key == before.key
        conversations.add(after.conversation)
    assert requests[0].turn == 1 and requests[0].previous_key is None
    assert all(1 <= r.turn <= MAX_TURNS for r in requests)
    # 20 % end per turn: conversations of more than one turn happen, and so do several conversations
    assert any(r.turn > 1 for r in requests)
    assert len(conversations) > 10
    # the mean conversation length is about 1 / 0.2 = 5 turns (loose bound: 2000 requests)
    mean_turns = len(requests) / len(conversations)
    assert 0.5 / CONVERSATION_END_PROBABILITY < mean_turns < 2.0 / CONVERSATION_END_PROBABILITY


def test_disable_multi_turn():
    requests = take(User(5, 1, multi_turn=False), 200)
    assert all(r.turn == 1 and r.previous_key is None for r in requests)
    assert [r.conversation for r in requests] == list(range(1, 201))
    assert len({r.key for r in requests}) == 200


def test_prefix_caching_and_its_disable_flag():
    with_prefix = take(User(5, 1), 20)
    template = TEMPLATE_BY_NAME[with_prefix[0].template]
    assert all(r.prefix_key == f"prefix-{template.name}" for r in with_prefix)
    assert all(r.prefix_tokens == template.system_prompt_tokens > 0 for r in with_prefix)
    without = take(User(5, 1, prefix_caching=False), 20)
    assert all(r.prefix_key is None and r.prefix_tokens == 0 for r in without)
    # the flag changes nothing else
    assert [r.key for r in without] == [r.key for r in with_prefix]
    assert [r.context_tokens for r in without] == [r.context_tokens for r in with_prefix]


def test_users_share_one_prefix_key_per_template():
    prefixes = {}
    for user_id in range(60):
        user = User(3, user_id)
        prefixes.setdefault(user.template.name, set()).add(next(user.requests()).prefix_key)
    assert all(len(keys) == 1 for keys in prefixes.values())


def test_template_and_qos_picks_stay_in_declared_ranges():
    templates, qos = set(), set()
    for user_id in range(200):
        user = User(11, user_id)
        for r in take(user, 10):
            tpl = TEMPLATE_BY_NAME[r.template]
            assert r.template == user.template.name
            assert r.qos == user.qos.name and r.qos in QOS_NAMES
            assert tpl.context_tokens[0] <= r.context_tokens <= tpl.context_tokens[1]
            assert tpl.generation_tokens[0] <= r.generation_tokens <= tpl.generation_tokens[1]
            assert tpl.think_seconds[0] <= r.think_seconds <= tpl.think_seconds[1]
            templates.add(r.template)
            qos.add(r.qos)
    assert templates == set(TEMPLATE_BY_NAME)
    assert qos == QOS_NAMES


def test_template_mix_follows_weights_loosely():
    counts = {t.name: 0 for t in TEMPLATES}
    n = 3000
    for user_id in range(n):
        counts[User(0, user_id).template.name] += 1
    for tpl in TEMPLATES:
        assert abs(counts[tpl.name] / n - tpl.weight) < 0.05, counts


def test_reference_ranges():
    chatbot, coding, document = (TEMPLATE_BY_NAME[n] for n in ("chatbot", "coding", "document"))
    assert chatbot.context_tokens == (512, 4096) and chatbot.generation_tokens == (50, 200)
    assert coding.context_tokens == (4096, 25000) and coding.generation_tokens == (100, 500)
    assert document.context_tokens == (4096, 16384) and document.generation_tokens == (200, 800)
    shares = {q.name: (q.share, q.ttft_target_ms) for q in QOS_CLASSES}
    assert shares == {"interactive": (0.15, 50.0), "responsive": (0.35, 100.0), "batch": (0.5, 1000.0)}


def test_mean_entry_tokens_matches_the_template_mix():
    expected = 0.5 * (512 + 4096) / 2 + 0.3 * (4096 + 25000) / 2 + 0.2 * (4096 + 16384) / 2
    assert mean_entry_tokens() == pytest.approx(expected)


def test_arrivals_deterministic_and_increasing():
    a = list(itertools.islice(Arrivals(42, 10.0, 7), 500))
    b = list(itertools.islice(Arrivals(42, 10.0, 7), 500))
    c = list(itertools.islice(Arrivals(43, 10.0, 7), 500))
    assert a == b
    assert a != c
    times = [t for t, _user in a]
    assert all(later > earlier for earlier, later in zip(times, times[1:]))
    assert {u for _t, u in a} == set(range(7))


@pytest.mark.parametrize("rate", [0.5, 20.0, 1000.0])
def test_arrivals_mean_interarrival_near_one_over_rate(rate):
    n = 20000
    arrivals = list(itertools.islice(Arrivals(1, rate, 3), n))
    assert all(0 <= user < 3 for _t, user in arrivals)
    mean = arrivals[-1][0] / n
    # the standard error of the mean is 1/(rate*sqrt(n)) ~ 0.7 % here; allow 5 %
    assert abs(mean * rate - 1.0) < 0.05
