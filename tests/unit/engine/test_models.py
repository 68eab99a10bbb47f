"""The model registry: built-in bytes/token and user-defined models from a config mapping."""

import pytest

from kvcache.errors import UsageError
from kvcache.models import BUILTIN_MODELS, Model, Registry, model_from_mapping, model_from_reference

# Bytes per token from the reference's registry (notes/reference-benchmark.md), fp16.
REFERENCE_BYTES_PER_TOKEN = {
    "tiny-1b": 24576,
    "mistral-7b": 131072,
    "llama2-7b": 524288,
    "llama3.1-8b": 131072,
    "llama3.1-70b-instruct": 327680,
    "deepseek-v3": 70272,
    "qwen3-32b": 262144,
    "gpt-oss-120b": 73728,
    "gpt-oss-20b": 49152,
}


@pytest.mark.parametrize("name,expected", sorted(REFERENCE_BYTES_PER_TOKEN.items()))
def test_builtin_bytes_per_token(name, expected):
    assert Registry().get(name).bytes_per_token == expected


def test_builtin_set_is_exactly_the_reference_set():
    assert set(BUILTIN_MODELS) == set(REFERENCE_BYTES_PER_TOKEN)
    for name in REFERENCE_BYTES_PER_TOKEN:
        assert Registry().get(name).name == name


def test_deepseek_is_mla_and_the_others_are_not():
    assert Registry().get("deepseek-v3").is_mla
    assert not any(Registry().get(n).is_mla for n in REFERENCE_BYTES_PER_TOKEN if n != "deepseek-v3")


def test_formula_standard_attention():
    # layers x kv_heads x head_dim x 2 (K and V) x bytes per element
    assert Model("m", layers=3, kv_heads=5, head_dim=7).bytes_per_token == 3 * 5 * 7 * 2 * 2
    assert Model("m", layers=3, kv_heads=5, head_dim=7, dtype="fp8").bytes_per_token == 3 * 5 * 7 * 2 * 1
    assert Model("m", layers=3, kv_heads=5, head_dim=7, dtype="fp32").bytes_per_token == 3 * 5 * 7 * 2 * 4


def test_unknown_model_names_option_and_choices():
    with pytest.raises(UsageError) as info:
        Registry().get("nope")
    assert info.value.option == "--model"
    assert "nope" in str(info.value)
    assert "llama3.1-8b" in str(info.value) and "deepseek-v3" in str(info.value)


def test_user_model_from_mapping():
    registry = Registry({"my-model": {"layers": 10, "kv_heads": 4, "head_dim": 64}})
    model = registry.get("my-model")
    assert model.bytes_per_token == 10 * 4 * 64 * 2 * 2
    assert not model.is_mla and model.name == "my-model"
    # built-ins stay available beside it
    assert registry.get("llama3.1-8b").bytes_per_token == 131072


def test_user_mla_model():
    model = Registry({"latent": {"layers": 61, "kv_lora_rank": 512, "qk_rope_dim": 64}}).get("latent")
    assert model.is_mla
    assert model.bytes_per_token == 70272
    fp8 = model_from_mapping("latent8", {"layers": 4, "kv_lora_rank": 100, "qk_rope_dim": 28, "dtype": "fp8"})
    assert fp8.bytes_per_token == 4 * 128 * 1


def test_user_model_dtype():
    model = model_from_mapping("m", {"layers": 2, "kv_heads": 2, "head_dim": 2, "dtype": "fp32"})
    assert model.dtype == "fp32"
    assert model.bytes_per_token == 2 * 2 * 2 * 2 * 4


def test_user_model_names_are_strings():
    assert Registry({7: {"layers": 1, "kv_heads": 1, "head_dim": 1}}).get("7").name == "7"


@pytest.mark.parametrize(
    "spec,where",
    [
        ({"layers": 0, "kv_heads": 8, "head_dim": 128}, "models.bad.layers"),
        ({"layers": -1, "kv_heads": 8, "head_dim": 128}, "models.bad.layers"),
        ({"layers": "32", "kv_heads": 8, "head_dim": 128}, "models.bad.layers"),
        ({"layers": 32.0, "kv_heads": 8, "head_dim": 128}, "models.bad.layers"),
        ({"layers": True, "kv_heads": 8, "head_dim": 128}, "models.bad.layers"),
        ({"layers": 32, "kv_heads": -8, "head_dim": 128}, "models.bad.kv_heads"),
        ({"layers": 32, "kv_heads": 8, "head_dim": None}, "models.bad.head_dim"),
        ({"layers": 32, "kv_heads": 8, "head_dim": 128, "heads": 8}, "models.bad.heads"),
        ({"layers": 32, "kv_heads": 8, "head_dim": 128, "dtype": "int3"}, "models.bad.dtype"),
        ({"layers": 32, "kv_heads": 8}, "models.bad.head_dim"),
        ({"layers": 32, "head_dim": 128}, "models.bad.kv_heads"),
        ({"layers": 32, "kv_lora_rank": 512, "qk_rope_dim": 64, "kv_heads": 8}, "models.bad.kv_heads"),
        ({"layers": 32, "kv_lora_rank": 512, "qk_rope_dim": 64, "head_dim": 8}, "models.bad.head_dim"),
    ],
)
def test_bad_model_spec_names_the_field(spec, where):
    with pytest.raises(UsageError) as info:
        Registry({"bad": spec})
    assert info.value.option == where
    assert str(info.value).startswith(where + ":")


def test_spec_that_is_not_a_mapping_names_the_model():
    with pytest.raises(UsageError) as info:
        Registry({"bad": [32, 8, 128]})
    assert info.value.option == "models.bad"


def test_unknown_key_error_lists_allowed_keys():
    with pytest.raises(UsageError) as info:
        model_from_mapping("x", {"layers": 1, "kv_heads": 1, "head_dim": 1, "n_heads": 2})
    for field in ("layers", "kv_heads", "head_dim", "kv_lora_rank", "qk_rope_dim", "dtype"):
        assert field in str(info.value)


def test_a_user_model_may_not_shadow_a_built_in():
    with pytest.raises(UsageError) as caught:
        Registry({"llama3.1-8b": {"layers": 1, "kv_heads": 1, "head_dim": 1}})
    assert "models.llama3.1-8b" in str(caught.value)


@pytest.mark.parametrize(
    "spec,expected",
    [
        # head_dim = hidden_dim // num_heads, as kv-cache.py derives it
        ({"num_layers": 32, "hidden_dim": 4096, "num_heads": 32, "kv_heads": 8}, 131072),
        # kv_dim_per_head wins over the derived head_dim (qwen3-32b: 5120 // 64 would be 80)
        ({"num_layers": 64, "hidden_dim": 5120, "num_heads": 64, "kv_heads": 8, "kv_dim_per_head": 128}, 262144),
        ({"num_layers": 2, "kv_heads": 2, "kv_dim_per_head": 64, "dtype": "float8"}, 2 * 2 * 64 * 2 * 1),
        ({"num_layers": 2, "kv_heads": 2, "kv_dim_per_head": 64, "dtype": "float32"}, 2 * 2 * 64 * 2 * 4),
        ({"num_layers": 61, "attention_type": "mla", "kv_lora_rank": 512, "qk_rope_head_dim": 64}, 70272),
    ],
)
def test_reference_model_config_geometry(spec, expected):
    assert model_from_reference("m", spec, "model_configs.m").bytes_per_token == expected


def test_reference_model_config_maps_names_and_dtypes():
    model = model_from_reference(
        "llama3.1-8b",
        {
            "name": "Llama 3.1 8B",
            "num_layers": 32,
            "hidden_dim": 4096,
            "num_heads": 32,
            "kv_heads": 8,
            "dtype": "bfloat16",
        },
        "model_configs.llama3.1-8b",
    )
    assert model.name == "llama3.1-8b" and model.dtype == "bf16"  # the key names it; `name` is for display
    assert model.hidden_dim == 4096 and model.head_dim == 128 and model.layers == 32


def test_reference_model_errors_start_with_where():
    with pytest.raises(UsageError) as info:
        model_from_reference(
            "m", {"num_layers": 2, "kv_heads": "8", "kv_dim_per_head": 8}, "--config f: model_configs.m"
        )
    assert str(info.value) == "--config f: model_configs.m.kv_heads: must be an integer, got '8'"
    with pytest.raises(UsageError, match="model_configs.m.layers: unknown key; allowed: name, num_layers"):
        model_from_reference("m", {"layers": 2}, "model_configs.m")


def test_registry_takes_built_models_which_may_replace_a_built_in():
    deeper = Model("tiny-1b", layers=24, kv_heads=4, head_dim=128)
    registry = Registry({"tiny-1b": deeper, "spec": {"layers": 1, "kv_heads": 1, "head_dim": 8}})
    assert registry.get("tiny-1b") is deeper and registry.get("spec").bytes_per_token == 32
    assert registry.get("llama3.1-8b") == BUILTIN_MODELS["llama3.1-8b"]
