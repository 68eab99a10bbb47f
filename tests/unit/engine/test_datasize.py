"""`kvcache datasize`: sizes from the one model registry and workload, scaling with users and ranks, the options
that shape a rank's entries (multi-turn, tensor parallelism, GPUs, system prompts, RAG), capacity checks."""

import io
import json
import math

import pytest

from kvcache.cli import main
from kvcache.datasize import AUTO_STORAGE_SHARE, HEADROOM, check_parallelism, compute, largest_entry_bytes
from kvcache.errors import UsageError
from kvcache.models import Registry
from kvcache.options import DATASIZE
from kvcache.run_config import make_config
from kvcache.units import GIB
from kvcache.workload import Template, WorkloadProfile

BPT_8B = 131072  # llama3.1-8b
# The built-in templates' mean request context: each user's largest context L is uniform in its template's range,
# a request's uniform in [L/4, L], so 5/8 of the range's middle; templates are equally likely.
MEAN_TOKENS = ((512 + 4096) / 2 + (4096 + 25000) / 2 + (4096 + 16384) / 2) / 3 * 5 / 8
# Expected turns of a conversation with the defaults: 20 % chance to end before each later turn, at most 50.
MEAN_TURNS = (1 - 0.8**50) / 0.2
LONGEST_CONTEXT = 25000  # the coding template's


def datasize(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(["datasize", "--json", *argv], out, err)
    return code, json.loads(out.getvalue()), err.getvalue()


def values(**overrides):
    """datasize's config: the option table's defaults, no GPU or CPU tier unless given."""
    return make_config(DATASIZE, **{"gpu_mem_gb": 0.0, "cpu_mem_gb": 0.0, **overrides})


def sized(**overrides):
    return compute(values(**overrides), {})


def model(name):
    return Registry({}).get(name)


def test_llama31_8b_100_users():
    code, report, err = datasize("--model", "llama3.1-8b", "--num-users", "100")
    assert code == 0 and err == ""
    assert report["bytes_per_token"] == BPT_8B
    assert report["model"] == "llama3.1-8b"
    assert report["num_users_per_rank"] == 100 and report["ranks"] == 1
    assert report["num_gpus_per_rank"] == 1 and report["tensor_parallel"] == 1
    assert report["fits"] is True and report["problems"] == []
    # every turn of the expected conversation, each of the mean request context, per user
    assert report["live_entries_per_user"] == pytest.approx(MEAN_TURNS, abs=1e-3)
    # (each entry is whole bytes: a few bytes more than the exact product)
    assert report["per_user_working_set_bytes"] == pytest.approx(MEAN_TOKENS * BPT_8B * MEAN_TURNS, abs=MEAN_TURNS + 1)
    assert report["prefix_bytes_per_rank"] == 3 * 1024 * BPT_8B  # three system prompts of 1024 tokens
    assert report["rag_bytes_per_rank"] == 0
    assert report["largest_entry_bytes"] == LONGEST_CONTEXT * BPT_8B


def test_every_builtin_model_uses_the_registry():
    for name, bpt in (("tiny-1b", 24576), ("deepseek-v3", 70272), ("llama3.1-70b-instruct", 327680)):
        assert sized(model=name)["bytes_per_token"] == bpt


def test_user_model_from_config(tmp_path):
    config = tmp_path / "m.yaml"
    config.write_text("models:\n  toy: {layers: 1, kv_heads: 1, head_dim: 64}\n")
    code, report, _err = datasize("--config", str(config), "--model", "toy")
    assert code == 0
    assert report["bytes_per_token"] == 256


def test_scales_linearly_with_users():
    one, two = sized(num_users=10), sized(num_users=20)
    shared = one["prefix_bytes_per_rank"] + one["rag_bytes_per_rank"]  # a rank's, whatever its users
    assert two["working_set_bytes_per_rank"] - shared == 2 * (one["working_set_bytes_per_rank"] - shared)
    assert two["working_set_bytes_per_rank"] == 20 * one["per_user_working_set_bytes"] + shared


def test_scales_with_ranks():
    one, four = sized(ranks=1), sized(ranks=4)
    assert four["working_set_bytes_per_rank"] == one["working_set_bytes_per_rank"]
    assert four["total_working_set_bytes"] == 4 * one["total_working_set_bytes"]
    assert four["storage_bytes_needed"] == 4 * one["storage_bytes_needed"]
    assert four["host_memory_bytes_needed"] == 4 * one["host_memory_bytes_needed"]


def test_storage_needed_is_what_the_memory_tiers_cannot_hold():
    bare = sized()
    assert bare["storage_bytes_needed_per_rank"] == pytest.approx(
        bare["working_set_bytes_per_rank"] * HEADROOM + bare["largest_entry_bytes"], abs=1
    )
    with_tiers = sized(gpu_mem_gb=16.0, cpu_mem_gb=4.0)
    assert with_tiers["tiers_bytes_per_rank"] == {"gpu": 16 * GIB, "cpu": 4 * GIB}
    assert with_tiers["storage_bytes_needed_per_rank"] == pytest.approx(
        (bare["working_set_bytes_per_rank"] - 20 * GIB) * HEADROOM + bare["largest_entry_bytes"], abs=1
    )
    everything_fits = sized(num_users=1, gpu_mem_gb=1000.0)
    assert everything_fits["storage_bytes_needed_per_rank"] == everything_fits["largest_entry_bytes"]
    assert with_tiers["host_memory_bytes_needed_per_rank"] - bare["host_memory_bytes_needed_per_rank"] == 4 * GIB


# --- what a user's live entries are ------------------------------------------------------------------------------


def test_multi_turn_reads_all_holds_the_expected_conversation_previous_two_turns_single_one():
    entry = MEAN_TOKENS * BPT_8B
    for overrides, live in (
        ({}, MEAN_TURNS),
        ({"multi_turn_reads": "previous"}, 2.0),
        ({"disable_multi_turn": True}, 1.0),
        ({"disable_multi_turn": True, "multi_turn_reads": "previous"}, 1.0),
    ):
        report = sized(**overrides)
        assert report["live_entries_per_user"] == pytest.approx(live, abs=1e-3), overrides
        assert report["per_user_working_set_bytes"] == pytest.approx(entry * live, abs=live + 1), overrides


def test_conversation_length_options_set_the_live_entries():
    # E[min(G, cap)] for a geometric number of turns: (1 - (1 - p)^cap) / p
    assert sized(end_conversation_probability=0.5)["live_entries_per_user"] == pytest.approx(2 * (1 - 0.5**50))
    assert sized(max_turns=3)["live_entries_per_user"] == pytest.approx((1 - 0.8**3) / 0.2)
    assert sized(end_conversation_probability=0.0, max_turns=7)["live_entries_per_user"] == 7.0
    # conversations of one turn have no previous turn to re-read
    assert sized(max_turns=1, multi_turn_reads="previous")["live_entries_per_user"] == 1.0
    assert sized(end_conversation_probability=1.0, multi_turn_reads="previous")["live_entries_per_user"] == 1.0


def test_a_config_files_templates_set_the_entry_sizes():
    profile = WorkloadProfile(templates=(Template("fixed", (800, 800), (10, 10), (0.1, 0.1)),))
    report = compute(make_config(DATASIZE, gpu_mem_gb=0.0, cpu_mem_gb=0.0, workload=profile), {})
    assert report["mean_entry_tokens"] == 500.0  # 5/8 of 800
    assert report["per_user_working_set_bytes"] == math.ceil(500 * BPT_8B * MEAN_TURNS)
    assert report["largest_entry_bytes"] == 1024 * BPT_8B  # a system prompt is now the longest entry


# --- tensor parallelism and GPUs ---------------------------------------------------------------------------------


def test_tensor_parallel_splits_every_entry():
    one = sized(enable_rag=True)
    two = sized(enable_rag=True, num_gpus=2, tensor_parallel=2)
    assert two["tensor_parallel"] == 2
    assert two["per_user_working_set_bytes"] == pytest.approx(one["per_user_working_set_bytes"] / 2, abs=MEAN_TURNS)
    assert two["prefix_bytes_per_rank"] == one["prefix_bytes_per_rank"] / 2
    assert two["rag_bytes_per_rank"] == pytest.approx(one["rag_bytes_per_rank"] / 2, abs=1)
    assert two["largest_entry_bytes"] == LONGEST_CONTEXT * BPT_8B // 2
    assert two["working_set_bytes_per_rank"] == pytest.approx(one["working_set_bytes_per_rank"] / 2, rel=1e-9)


def test_tensor_parallel_entries_take_whole_blocks():
    # deepseek-v3's 70,272 bytes per token over 3 GPUs: 25000 x 23,424 bytes, rounded up to 4 KiB blocks
    report = sized(model="deepseek-v3", num_gpus=3, tensor_parallel=3)
    assert report["largest_entry_bytes"] == math.ceil(25000 * 70272 / 3 / 4096) * 4096


def test_the_gpu_tier_is_gpu_mem_gb_on_each_gpu():
    one = sized(gpu_mem_gb=8.0)
    four = sized(gpu_mem_gb=8.0, num_gpus=4)
    assert one["tiers_bytes_per_rank"]["gpu"] == 8 * GIB
    assert four["tiers_bytes_per_rank"]["gpu"] == 32 * GIB
    assert four["num_gpus_per_rank"] == 4
    # more GPUs hold more of the working set, entries stay whole (tensor parallel 1)
    assert four["working_set_bytes_per_rank"] == one["working_set_bytes_per_rank"]
    assert one["storage_bytes_needed_per_rank"] - four["storage_bytes_needed_per_rank"] == pytest.approx(
        24 * GIB * HEADROOM, abs=1
    )


def test_tensor_parallel_above_num_gpus_is_a_usage_error():
    with pytest.raises(UsageError) as error:
        check_parallelism(values(num_gpus=2, tensor_parallel=4))
    assert str(error.value).startswith("--tensor-parallel: 4 must be at most --num-gpus (2)")
    check_parallelism(values(num_gpus=4, tensor_parallel=4))  # equal is fine
    out, err = io.StringIO(), io.StringIO()
    assert main(["datasize", "--tensor-parallel", "2"], out, err) == 2
    assert "--tensor-parallel" in err.getvalue() and "--num-gpus (1)" in err.getvalue()
    assert out.getvalue() == ""


# --- system prompts ------------------------------------------------------------------------------------------------


def test_system_prompts_are_held_once_per_rank():
    base = sized()
    more = sized(system_prompts=10, system_prompt_tokens=2048)
    assert more["prefix_bytes_per_rank"] == 10 * 2048 * BPT_8B
    assert more["working_set_bytes_per_rank"] - base["working_set_bytes_per_rank"] == (10 * 2048 - 3 * 1024) * BPT_8B
    assert sized(num_users=1, system_prompts=10)["prefix_bytes_per_rank"] == 10 * 1024 * BPT_8B  # not per user
    no_prefix = sized(disable_prefix_caching=True)
    assert no_prefix["prefix_bytes_per_rank"] == 0
    assert no_prefix["working_set_bytes_per_rank"] == base["working_set_bytes_per_rank"] - base["prefix_bytes_per_rank"]


def test_a_system_prompt_longer_than_any_context_is_the_largest_entry():
    assert sized(system_prompt_tokens=30000)["largest_entry_bytes"] == 30000 * BPT_8B
    # without prefix caching no prompt is written
    assert sized(system_prompt_tokens=30000, disable_prefix_caching=True)["largest_entry_bytes"] == 25000 * BPT_8B


# --- RAG -----------------------------------------------------------------------------------------------------------


def test_rag_documents_are_held_per_rank_with_the_models_document_sizes():
    small = sized(enable_rag=True)  # llama3.1-8b: 32 layers, hidden 4096, the small-model range 4000-12000
    assert small["rag_bytes_per_rank"] == 10 * 8000 * BPT_8B
    assert small["working_set_bytes_per_rank"] == sized()["working_set_bytes_per_rank"] + small["rag_bytes_per_rank"]
    large = sized(model="llama3.1-70b-instruct", enable_rag=True, rag_num_docs=4)  # 80 layers: 1024-4096
    assert large["rag_bytes_per_rank"] == 4 * 2560 * 327680
    assert sized(enable_rag=True, rag_num_docs=100)["rag_bytes_per_rank"] == 100 * 8000 * BPT_8B
    assert sized(rag_num_docs=100)["rag_bytes_per_rank"] == 0  # documents only with --enable-rag


def test_rag_document_token_ranges_set_the_corpus():
    small = sized(enable_rag=True, rag_small_model_doc_tokens_min=100, rag_small_model_doc_tokens_max=300)
    assert small["rag_bytes_per_rank"] == 10 * 200 * BPT_8B
    ignored = sized(enable_rag=True, rag_large_model_doc_tokens_min=1, rag_large_model_doc_tokens_max=1)
    assert ignored["rag_bytes_per_rank"] == 10 * 8000 * BPT_8B  # a small model does not use the large range
    large = sized(
        model="qwen3-32b", enable_rag=True, rag_large_model_doc_tokens_min=10, rag_large_model_doc_tokens_max=30
    )  # 64 layers: large
    assert large["rag_bytes_per_rank"] == 10 * 20 * model("qwen3-32b").bytes_per_token


def test_a_rag_chunk_can_be_the_largest_entry_up_to_its_byte_limit():
    # a chunk longer than any context (and than the documents' chunks by default)
    long_chunks = dict(enable_rag=True, rag_chunk_tokens=40000, rag_max_chunk_bytes=1 << 40)
    assert sized(**long_chunks)["largest_entry_bytes"] == 40000 * BPT_8B
    assert sized(**{**long_chunks, "enable_rag": False})["largest_entry_bytes"] == 25000 * BPT_8B
    # --rag-max-chunk-bytes cuts a chunk to the tokens that fit: 30,000 tokens of 131,072 bytes
    capped = sized(**{**long_chunks, "rag_max_chunk_bytes": 30000 * BPT_8B + 100})
    assert capped["largest_entry_bytes"] == 30000 * BPT_8B
    # with tensor parallelism the byte limit is on the rank's share of the chunk: twice the tokens fit
    split = sized(**{**long_chunks, "rag_max_chunk_bytes": 15000 * BPT_8B, "num_gpus": 2, "tensor_parallel": 2})
    assert split["largest_entry_bytes"] == 30000 * BPT_8B // 2


# --- checks --------------------------------------------------------------------------------------------------------


def test_check_free_bytes_too_small_exits_1():
    code, report, err = datasize("--num-users", "100", "--check-free-bytes", "1000")
    assert code == 1
    assert report["fits"] is False
    assert "--check-free-bytes" in err and "storage" in err
    assert f"{report['storage_bytes_needed']:,}" in err


def test_check_mem_bytes_too_small_exits_1():
    code, _report, err = datasize("--check-mem-bytes", "1024")
    assert code == 1
    assert "--check-mem-bytes" in err and "memory" in err
    assert "--check-free-bytes" not in err


def test_checks_that_fit_exit_0():
    report = datasize()[1]
    free_enough = math.ceil(report["storage_bytes_needed"] / AUTO_STORAGE_SHARE)  # a run takes 80 % of free
    code, again, err = datasize(
        "--check-free-bytes",
        str(free_enough),
        "--check-mem-bytes",
        str(report["host_memory_bytes_needed"]),
    )
    assert code == 0 and err == "" and again["fits"] is True


def test_checks_count_all_ranks():
    one = datasize("--ranks", "1")[1]
    code, _out, err = datasize("--ranks", "2", "--check-free-bytes", str(one["storage_bytes_needed"]))
    assert code == 1 and "--check-free-bytes" in err


def test_the_new_options_change_what_the_check_sees():
    plain = datasize()[1]
    free = math.ceil(plain["storage_bytes_needed"] / AUTO_STORAGE_SHARE)
    assert datasize("--check-free-bytes", str(free))[0] == 0
    code, _out, err = datasize("--check-free-bytes", str(free), "--enable-rag", "--rag-num-docs", "1000")
    assert code == 1 and "--check-free-bytes" in err


def test_table_output():
    out, err = io.StringIO(), io.StringIO()
    argv = ["datasize", "--model", "llama3.1-8b", "--num-users", "100", "--num-gpus", "2", "--tensor-parallel", "2"]
    assert main(argv, out, err) == 0
    text = out.getvalue()
    assert "131,072" in text and "llama3.1-8b" in text and "GiB" in text
    assert "100 x 1" in text
    assert "GPUs per rank, tensor parallel  2, 2" in text
    assert "system prompts per rank" in text and "RAG documents per rank" in text


def test_negative_check_is_a_usage_error():
    out, err = io.StringIO(), io.StringIO()
    assert main(["datasize", "--check-free-bytes", "-1"], out, err) == 2
    assert "--check-free-bytes" in err.getvalue()


def test_free_space_check_leaves_the_share_a_run_does_not_use():
    needed = datasize()[1]["storage_bytes_needed"]
    code, _out, err = datasize("--check-free-bytes", str(needed))  # all of it is not enough: runs take 80 %
    assert code == 1 and "80%" in err


def test_memory_needed_follows_the_io_buffers():
    small = datasize("--io-depth", "1", "--io-chunk-mib", "1")[1]["host_memory_bytes_needed_per_rank"]
    large = datasize("--io-depth", "4", "--io-chunk-mib", "64")[1]["host_memory_bytes_needed_per_rank"]
    assert large - small == 4 * (64 << 20) - (1 << 20)


def test_largest_entry_is_the_one_formula_run_checks_against():
    # deepseek-v3's 70,272 bytes per token do not fill whole 4 KiB blocks: the entry takes whole blocks.
    config = values(model="deepseek-v3")
    report = compute(config, {})
    assert report["largest_entry_bytes"] == largest_entry_bytes(config, model("deepseek-v3"))
    assert report["largest_entry_bytes"] == math.ceil(25000 * 70272 / 4096) * 4096
    assert report["storage_bytes_needed_per_rank"] >= report["largest_entry_bytes"]
