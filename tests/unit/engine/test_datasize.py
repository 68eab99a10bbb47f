"""`kvcache datasize`: sizes from the one model registry, scaling with users and ranks, capacity checks."""

import io
import json
import math

import pytest

from kvcache.cli import main
from kvcache.datasize import AUTO_STORAGE_SHARE, HEADROOM, compute, largest_entry_bytes
from kvcache.options import DATASIZE
from kvcache.run_config import make_config
from kvcache.units import GIB
from kvcache.workload import TEMPLATES, mean_entry_tokens


def datasize(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(["datasize", "--json", *argv], out, err)
    return code, json.loads(out.getvalue()), err.getvalue()


def values(**overrides):
    """datasize's config: the option table's defaults, no GPU or CPU tier unless given."""
    return make_config(DATASIZE, **{"gpu_mem_gb": 0.0, "cpu_mem_gb": 0.0, **overrides})


def test_llama31_8b_100_users():
    code, report, err = datasize("--model", "llama3.1-8b", "--num-users", "100")
    assert code == 0 and err == ""
    assert report["bytes_per_token"] == 131072
    assert report["model"] == "llama3.1-8b"
    assert report["num_users_per_rank"] == 100 and report["ranks"] == 1
    assert report["fits"] is True and report["problems"] == []
    # two entries (current turn + the previous one re-read) of the mean template size per user
    assert report["per_user_working_set_bytes"] == pytest.approx(mean_entry_tokens() * 131072 * 2, abs=1)
    assert report["largest_entry_bytes"] == 25000 * 131072


def test_every_builtin_model_uses_the_registry():
    for model, bpt in (("tiny-1b", 24576), ("deepseek-v3", 70272), ("llama3.1-70b-instruct", 327680)):
        assert compute(values(model=model), {})["bytes_per_token"] == bpt


def test_user_model_from_config(tmp_path):
    config = tmp_path / "m.yaml"
    config.write_text("models:\n  toy: {layers: 1, kv_heads: 1, head_dim: 64}\n")
    code, report, _err = datasize("--config", str(config), "--model", "toy")
    assert code == 0
    assert report["bytes_per_token"] == 256


def test_scales_linearly_with_users():
    one = compute(values(num_users=10), {})
    two = compute(values(num_users=20), {})
    prefix = one["prefix_bytes_per_rank"]
    assert prefix == sum(t.system_prompt_tokens for t in TEMPLATES) * 131072
    assert two["working_set_bytes_per_rank"] - prefix == 2 * (one["working_set_bytes_per_rank"] - prefix)
    assert two["working_set_bytes_per_rank"] == 20 * one["per_user_working_set_bytes"] + prefix


def test_scales_with_ranks():
    one = compute(values(ranks=1), {})
    four = compute(values(ranks=4), {})
    assert four["working_set_bytes_per_rank"] == one["working_set_bytes_per_rank"]
    assert four["total_working_set_bytes"] == 4 * one["total_working_set_bytes"]
    assert four["storage_bytes_needed"] == 4 * one["storage_bytes_needed"]
    assert four["host_memory_bytes_needed"] == 4 * one["host_memory_bytes_needed"]


def test_storage_needed_is_what_the_memory_tiers_cannot_hold():
    bare = compute(values(), {})
    assert bare["storage_bytes_needed_per_rank"] == pytest.approx(
        bare["working_set_bytes_per_rank"] * HEADROOM + bare["largest_entry_bytes"], abs=1
    )
    with_tiers = compute(values(gpu_mem_gb=16.0, cpu_mem_gb=4.0), {})
    assert with_tiers["tiers_bytes_per_rank"] == {"gpu": 16 * GIB, "cpu": 4 * GIB}
    assert with_tiers["storage_bytes_needed_per_rank"] == pytest.approx(
        (bare["working_set_bytes_per_rank"] - 20 * GIB) * HEADROOM + bare["largest_entry_bytes"], abs=1
    )
    everything_fits = compute(values(num_users=1, gpu_mem_gb=1000.0), {})
    assert everything_fits["storage_bytes_needed_per_rank"] == everything_fits["largest_entry_bytes"]
    assert with_tiers["host_memory_bytes_needed_per_rank"] > bare["host_memory_bytes_needed_per_rank"]
    assert with_tiers["host_memory_bytes_needed_per_rank"] - bare["host_memory_bytes_needed_per_rank"] == 4 * GIB


def test_disable_flags_shrink_the_working_set():
    full = compute(values(), {})
    single = compute(values(disable_multi_turn=True), {})
    no_prefix = compute(values(disable_prefix_caching=True), {})
    assert single["per_user_working_set_bytes"] == pytest.approx(full["per_user_working_set_bytes"] / 2, abs=1)
    assert no_prefix["prefix_bytes_per_rank"] == 0
    assert no_prefix["working_set_bytes_per_rank"] == full["working_set_bytes_per_rank"] - full["prefix_bytes_per_rank"]


def test_check_free_bytes_too_small_exits_1():
    code, report, err = datasize("--num-users", "100", "--check-free-bytes", "1000")
    assert code == 1
    assert report["fits"] is False
    assert "--check-free-bytes" in err and "storage" in err
    assert f"{report['storage_bytes_needed']:,}" in err


def test_check_mem_bytes_too_small_exits_1():
    code, report, err = datasize("--check-mem-bytes", "1024")
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


def test_table_output():
    out, err = io.StringIO(), io.StringIO()
    assert main(["datasize", "--model", "llama3.1-8b", "--num-users", "100"], out, err) == 0
    text = out.getvalue()
    assert "131,072" in text and "llama3.1-8b" in text and "GiB" in text
    assert "100 x 1" in text


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
    report = compute(values(model="deepseek-v3"), {})
    assert report["largest_entry_bytes"] == largest_entry_bytes(70272) == math.ceil(25000 * 70272 / 4096) * 4096
    assert largest_entry_bytes(70272, prefix_caching=False) == report["largest_entry_bytes"]  # contexts are longer
    assert (
        compute(values(model="deepseek-v3", disable_prefix_caching=True), {})["largest_entry_bytes"]
        == (report["largest_entry_bytes"])
    )
    assert report["storage_bytes_needed_per_rank"] >= report["largest_entry_bytes"]
