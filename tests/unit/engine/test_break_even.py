"""Break-even against recompute, checked against hand computations."""

import math

import pytest
from built_results import two_rank_result

from kvcache.break_even import EXAMPLE_CONTEXT_TOKENS, break_even_block, break_even_line, crossing_tokens
from kvcache.cli import main
from kvcache.headline import headline_figures, headline_lines
from kvcache.models import BUILTIN_MODELS, Model, Registry
from kvcache.run_config import make_config

# Two layers of attention width 1,000 and a billion parameters, recomputed at 1e15 FLOP/s:
# weights 2e9 FLOPs = 2e-6 s per token, attention 2 x 2 x 1,000 = 4,000 FLOPs = 4e-12 s per token squared.
SMALL = Model("small", layers=2, kv_heads=1, head_dim=64, hidden_dim=1000, active_params=1_000_000_000)
FLOPS = 1e15


def recompute_s(tokens):
    return (2e9 * tokens + 4000.0 * tokens * tokens) / FLOPS


def test_the_crossing_is_where_loading_and_recomputing_take_as_long():
    load_s_per_token = 6e-6  # e.g. 256 KiB per token at about 40 GiB/s
    tokens = crossing_tokens(SMALL, load_s_per_token, FLOPS)
    assert tokens == pytest.approx((6e-6 - 2e-6) / 4e-12) == pytest.approx(1e6)
    assert tokens * load_s_per_token == pytest.approx(recompute_s(tokens))
    below, above = 0.5 * tokens, 2.0 * tokens
    assert below * load_s_per_token > recompute_s(below)  # shorter contexts: recompute them
    assert above * load_s_per_token < recompute_s(above)  # longer ones: load them


def test_storage_faster_per_token_than_the_weights_wins_at_any_length():
    assert crossing_tokens(SMALL, 1e-6, FLOPS) == 0.0


def config(**options):
    return make_config("run", model="llama3.1-8b", **options)


def storage(read_ops=10, bytes_read=10 * 256 << 20, mean_ms=200.0):
    return {"read_ops": read_ops, "bytes_read": bytes_read, "read_latency_ms": {"mean": mean_ms}}


def test_the_block_from_a_runs_storage_figures_by_hand():
    model = BUILTIN_MODELS["llama3.1-8b"]  # 131,072 bytes per token, 8.03e9 active parameters, 32 x 4,096
    block = break_even_block(config(gpu_profile="a100", gpu_utilization=0.4, tensor_parallel=2, num_gpus=2), model,
                             storage())  # fmt: skip
    flops = 312e12 * 0.4 * 2
    load_s_per_token = 131_072 * 0.2 / (256 << 20)  # each 256 MiB entry read took 200 ms on average
    expected = (load_s_per_token - 2 * 8.03e9 / flops) / (2 * 32 * 4096 / flops)
    assert block["context_tokens"] == math.ceil(expected)
    assert block["gpu_profile"] == "a100" and block["gpu_peak_tflops"] == 312.0 and block["tensor_parallel"] == 2
    assert block["read_mean_bytes"] == 256 << 20 and block["read_latency_mean_ms"] == 200.0
    example = block["example"]
    assert example["context_tokens"] == EXAMPLE_CONTEXT_TOKENS
    assert example["load_s"] == pytest.approx(EXAMPLE_CONTEXT_TOKENS * load_s_per_token, abs=1e-6)
    recompute = (2 * 8.03e9 * 8192 + 2 * 32 * 4096 * 8192**2) / flops
    assert example["recompute_s"] == pytest.approx(recompute, abs=1e-6)


def test_a_peak_given_replaces_the_profiles():
    block = break_even_block(config(gpu_peak_tflops=100.0), BUILTIN_MODELS["llama3.1-8b"], storage())
    assert block["gpu_profile"] == "custom" and block["gpu_peak_tflops"] == 100.0


def test_no_verdict_without_reads_or_without_the_models_parameters():
    none_read = break_even_block(config(), BUILTIN_MODELS["llama3.1-8b"], storage(read_ops=0, bytes_read=0))
    assert none_read["context_tokens"] is None and none_read["reason"] == "no storage read was measured"
    mine = Registry({"mine": {"layers": 4, "kv_heads": 2, "head_dim": 64}}).get("mine")
    unknown = break_even_block(config(), mine, storage())
    assert unknown["context_tokens"] is None and "models.mine.active_params" in unknown["reason"]
    assert break_even_line(unknown) == (
        "break-even vs recompute (h100 x1 at 50%): n/a (the model's parameter count is not known "
        "(give models.mine.active_params))"
    )
    given = Registry({"mine": {"layers": 4, "kv_heads": 2, "head_dim": 64, "active_params": 10**9}}).get("mine")
    assert break_even_block(config(), given, storage())["context_tokens"] is not None


def test_the_headline_carries_the_line_and_an_older_result_none():
    result = two_rank_result()
    assert not any(line.startswith("break-even") for line in headline_lines(headline_figures(result)))
    result["break_even"] = break_even_block(config(), BUILTIN_MODELS["llama3.1-8b"], storage())
    tokens = result["break_even"]["context_tokens"]
    [line] = [line for line in headline_lines(headline_figures(result)) if line.startswith("break-even")]
    assert line.startswith(f"break-even vs recompute (h100 x1 at 50%): loading a context from this storage is "
                           f"faster above {tokens:,} tokens (at 8,192 tokens: load ")  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--gpu-utilization", "0"], "--gpu-utilization"),
        (["--gpu-utilization", "1.5"], "--gpu-utilization"),
        (["--gpu-peak-tflops", "-1"], "--gpu-peak-tflops"),
        (["--gpu-profile", "tpu"], "--gpu-profile"),
    ],
)
def test_bad_gpu_options_exit_2_naming_them(argv, says, tmp_path, capsys):
    try:
        code = main(["run", "--cache-dir", str(tmp_path), "--duration", "1", *argv])
    except SystemExit as exited:  # argparse refuses a choice itself
        code = exited.code
    assert code == 2
    assert says in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
