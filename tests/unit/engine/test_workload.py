"""The workload is pure and deterministic: same seed and user, same requests."""

import itertools
import os
import subprocess
import sys

import pytest

from kvcache.models import BUILTIN_MODELS
from kvcache.run_config import make_config
from kvcache.workload import (
    DEFAULT_SETTINGS,
    QOS_CLASSES,
    TEMPLATES,
    Arrivals,
    RagCorpus,
    Settings,
    User,
    entry_bytes,
    mean_context_tokens,
    mean_conversation_turns,
    rag_doc_tokens,
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


def settings(**changes):
    return Settings(**dict(vars(DEFAULT_SETTINGS), **changes))


def test_multi_turn_chain_rereads_every_earlier_turn():
    requests = take(User(5, 1), 2000)
    conversations = set()
    for before, after in zip(requests, requests[1:]):
        if after.turn == 1:
            assert after.conversation == before.conversation + 1
            assert after.earlier_keys == ()
        else:
            assert after.conversation == before.conversation
            assert after.turn == before.turn + 1
            # every earlier turn of the conversation, oldest first
            assert after.earlier_keys == before.earlier_keys + (before.key,)
            assert after.previous_key == before.key
        conversations.add(after.conversation)
    assert requests[0].turn == 1 and requests[0].earlier_keys == ()
    assert all(1 <= r.turn <= DEFAULT_SETTINGS.max_turns for r in requests)
    assert any(r.turn > 2 for r in requests) and len(conversations) > 10
    # 20 % end before each later request: about 1 / 0.2 = 5 turns (loose bound: 2000 requests)
    mean_turns = len(requests) / len(conversations)
    assert 2.5 < mean_turns < 10
    assert mean_conversation_turns(make_config("run")) == pytest.approx((1 - 0.8**50) / 0.2)


def test_previous_only_rereads_one_turn():
    requests = take(User(5, 1, settings(multi_turn_reads="previous")), 500)
    assert [r.key for r in requests] == [r.key for r in take(User(5, 1), 500)]  # the same conversations
    for r in requests:
        assert r.earlier_keys == ((f"u1c{r.conversation}t{r.turn - 1}",) if r.turn > 1 else ())


def test_max_turns_and_end_probability():
    never_ends = take(User(5, 1, settings(end_probability=0.0, max_turns=7)), 70)
    assert [r.turn for r in never_ends] == list(range(1, 8)) * 10
    always_ends = take(User(5, 1, settings(end_probability=1.0)), 50)
    assert all(r.turn == 1 for r in always_ends)


def test_disable_multi_turn():
    requests = take(User(5, 1, settings(multi_turn=False)), 200)
    assert all(r.turn == 1 and r.earlier_keys == () for r in requests)
    assert [r.conversation for r in requests] == list(range(1, 201))
    assert len({r.key for r in requests}) == 200


def test_prefix_hits_a_share_of_requests_and_one_of_several_prompts():
    requests = [r for u in range(40) for r in take(User(9, u), 100)]
    with_prefix = [r for r in requests if r.prefix_key]
    # the chance is 0.2, less the few requests whose context is shorter than a prompt
    assert 0.15 < len(with_prefix) / len(requests) < 0.25
    assert {r.prefix_key for r in with_prefix} == {"prefix-0", "prefix-1", "prefix-2"}
    assert all(r.prefix_tokens == 1024 for r in with_prefix)
    assert all(r.prefix_key is None and r.prefix_tokens == 0 for r in requests if not r.prefix_key)
    more = [r for u in range(40) for r in take(User(9, u, settings(prefix_probability=0.6, system_prompts=5)), 100)]
    assert 0.5 < sum(1 for r in more if r.prefix_key) / len(more) < 0.65
    assert {r.prefix_key for r in more if r.prefix_key} == {f"prefix-{i}" for i in range(5)}


def test_the_prompt_is_part_of_the_context_and_the_disable_flag_changes_nothing_else():
    with_prefix = take(User(5, 1), 300)
    without = take(User(5, 1, settings(prefix_caching=False)), 300)
    assert all(r.prefix_key is None and r.prefix_tokens == 0 for r in without)
    assert [r.key for r in without] == [r.key for r in with_prefix]
    assert [r.context_tokens for r in without] == [r.context_tokens + r.prefix_tokens for r in with_prefix]


def test_requests_follow_the_users_own_ranges():
    templates, qos = set(), set()
    for user_id in range(200):
        user = User(11, user_id)
        tpl = TEMPLATE_BY_NAME[user.template.name]
        assert tpl.context_tokens[0] <= user.max_context <= tpl.context_tokens[1]
        assert tpl.generation_tokens[0] <= user.max_generation <= tpl.generation_tokens[1]
        assert tpl.think_seconds[0] <= user.think <= tpl.think_seconds[1]
        for r in take(user, 10):
            assert r.template == user.template.name
            assert r.qos == user.qos.name and r.priority == user.qos.priority
            context = r.context_tokens + r.prefix_tokens
            assert max(1, user.max_context // 4) <= context <= user.max_context
            assert max(1, user.max_generation // 4) <= r.generation_tokens <= user.max_generation
            assert 0.8 * user.think <= r.think_seconds <= 1.2 * user.think
            templates.add(r.template)
            qos.add(r.qos)
    assert templates == set(TEMPLATE_BY_NAME)
    assert qos == QOS_NAMES


def test_templates_are_uniform_and_qos_classes_follow_their_shares():
    n = 3000
    users = [User(0, user_id) for user_id in range(n)]
    for tpl in TEMPLATES:
        assert abs(sum(u.template is tpl for u in users) / n - 1 / 3) < 0.04
    for q in QOS_CLASSES:
        assert abs(sum(u.qos is q for u in users) / n - q.share) < 0.04


def test_reference_ranges_and_qos_classes():
    chatbot, coding, document = (TEMPLATE_BY_NAME[n] for n in ("chatbot", "coding", "document"))
    assert chatbot.context_tokens == (512, 4096) and chatbot.generation_tokens == (50, 200)
    assert coding.context_tokens == (4096, 25000) and coding.generation_tokens == (100, 500)
    assert document.context_tokens == (4096, 16384) and document.generation_tokens == (200, 800)
    classes = {q.name: (q.share, q.priority, q.targets_ms) for q in QOS_CLASSES}
    assert classes == {
        "interactive": (0.15, 3, (50.0, 100.0, 150.0, 200.0)),
        "responsive": (0.35, 2, (100.0, 200.0, 350.0, 500.0)),
        "batch": (0.5, 1, (1000.0, 5000.0, 7500.0, 10000.0)),
    }


def test_mean_context_tokens_matches_the_draws():
    expected = sum((t.context_tokens[0] + t.context_tokens[1]) / 2 * 5 / 8 for t in TEMPLATES) / 3
    assert mean_context_tokens() == pytest.approx(expected)
    drawn = [r.context_tokens + r.prefix_tokens for u in range(600) for r in take(User(3, u), 5)]
    assert sum(drawn) / len(drawn) == pytest.approx(expected, rel=0.08)


def rag_settings(distribution, docs=(24, 3)):
    return settings(rag_probability=0.5, rag_top_k=5, rag_distribution=distribution, rag_docs=docs)


@pytest.mark.parametrize("distribution", ["zipfian", "uniform", "random"])
def test_rag_requests_read_distinct_top_k_chunks_of_one_document(distribution):
    requests = take(User(4, 0, rag_settings(distribution)), 2000)
    rag = [r for r in requests if r.rag_keys]
    assert 0.45 < len(rag) / len(requests) < 0.55
    for r in rag:
        docs = {key.split("c")[0] for key in r.rag_keys}
        assert len(docs) == 1 and len(set(r.rag_keys)) == len(r.rag_keys)
        assert len(r.rag_keys) == (5 if docs == {"rag-d0"} else 3)  # at most the document's chunks


def test_zipfian_prefers_the_first_chunks_uniform_does_not():
    def first_chunk_share(distribution):
        requests = take(User(4, 0, rag_settings(distribution, docs=(24,))), 3000)
        keys = [k for r in requests for k in r.rag_keys]
        return sum(k == "rag-d0c0" for k in keys) / len(keys), sum(k == "rag-d0c23" for k in keys) / len(keys)

    zipf_first, zipf_last = first_chunk_share("zipfian")
    uniform_first, uniform_last = first_chunk_share("uniform")
    assert zipf_first > 3 * zipf_last
    assert abs(uniform_first - 1 / 24) < 0.02 and abs(uniform_last - 1 / 24) < 0.02


def test_no_rag_keys_without_documents():
    assert all(r.rag_keys == () for r in take(User(4, 0, settings(rag_probability=1.0)), 100))


def test_rag_corpus_cuts_documents_into_chunks():
    corpus = RagCorpus(7, 4, (1000, 2000), 512)
    assert corpus.doc_tokens == RagCorpus(7, 4, (1000, 2000), 512).doc_tokens
    for doc, tokens in enumerate(corpus.doc_tokens):
        chunks = corpus.chunks(doc)
        assert 1000 <= tokens <= 2000 and sum(t for _key, t in chunks) == tokens
        assert [key for key, _t in chunks] == [f"rag-d{doc}c{i}" for i in range(len(chunks))]
        assert all(t == 512 for _key, t in chunks[:-1]) and len(chunks) == corpus.chunk_count(doc)
    config = make_config("run", rag_chunk_tokens=512, rag_max_chunk_bytes=100 * 131072)
    assert RagCorpus.chunk_tokens_for(config, 131072) == 100  # the byte limit cuts the chunk
    assert RagCorpus.chunk_tokens_for(config, 131072 / 8) == 512


def test_entry_bytes_divide_by_tensor_parallel():
    assert entry_bytes(1000, 131072) == 131072000
    assert entry_bytes(1000, 131072, 8) == 16384000
    assert entry_bytes(3, 5, 2) == 8  # rounded up: no byte of the KV is lost


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


def test_large_models_get_the_smaller_rag_documents():
    config = make_config("run")
    large, small = (config.rag_large_model_doc_tokens_min, config.rag_large_model_doc_tokens_max), (4000, 12000)
    assert rag_doc_tokens(config, BUILTIN_MODELS["llama3.1-70b-instruct"]) == large == (1024, 4096)
    assert rag_doc_tokens(config, BUILTIN_MODELS["qwen3-32b"]) == large  # 64 layers
    assert rag_doc_tokens(config, BUILTIN_MODELS["llama3.1-8b"]) == small
    assert rag_doc_tokens(config, BUILTIN_MODELS["deepseek-v3"]) == small  # 61 layers, hidden size 7168
