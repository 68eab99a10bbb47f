"""--config reads kv-cache.py's config.yaml as it is (issue 11, scope item 2): each key drives the workload
with the reference's meaning, or is accepted with a warning that names it; unknown keys and wrong types fail."""

import dataclasses

import pytest
import yaml

from kvcache.cli import build_parser
from kvcache.errors import UsageError
from kvcache.models import BUILTIN_MODELS, Registry
from kvcache.options import DATASIZE, OPTIONS, RUN, load_config, options_for
from kvcache.reference_config import IGNORED
from kvcache.run_config import resolve
from kvcache.workload import DEFAULT_PROFILE

# kv-cache.py's config.yaml with every section and key at its defaults (notes/reference-workload.md §2 and the
# reference's schema), written as a user's file is: flow mappings, 0.50 and 0.030 as printed there.
FULL_CONFIG = """\
model_configs:
  tiny-1b: {name: "Tiny 1B", num_layers: 12, hidden_dim: 1024, num_heads: 8, kv_heads: 4, dtype: "float16"}
  mistral-7b: {name: "Mistral 7B", num_layers: 32, hidden_dim: 4096, num_heads: 32, kv_heads: 8, dtype: "float16"}
  llama2-7b: {name: "Llama 2 7B", num_layers: 32, hidden_dim: 4096, num_heads: 32, kv_heads: 32, dtype: "float16"}
  llama3.1-8b: {name: "Llama 3.1 8B", num_layers: 32, hidden_dim: 4096, num_heads: 32, kv_heads: 8, dtype: "float16"}
  llama3.1-70b-instruct: {name: "Llama 3.1 70B Instruct", num_layers: 80, hidden_dim: 8192, num_heads: 64,
                          kv_heads: 8, dtype: "float16"}
  deepseek-v3: {name: "Deepseek v3", num_layers: 61, num_heads: 128, hidden_dim: 7168, attention_type: "mla",
                kv_lora_rank: 512, qk_rope_head_dim: 64, dtype: "float16"}
  qwen3-32b: {name: "Qwen 3 32B", num_layers: 64, num_heads: 64, hidden_dim: 5120, kv_heads: 8,
              kv_dim_per_head: 128, dtype: "float16"}
  gpt-oss-120b: {name: "GPT OSS 120B", num_layers: 36, hidden_dim: 2880, num_heads: 64, kv_heads: 8,
                 kv_dim_per_head: 64, dtype: "float16"}
  gpt-oss-20b: {name: "GPT OSS 20B", num_layers: 24, hidden_dim: 2880, num_heads: 64, kv_heads: 8,
                kv_dim_per_head: 64, dtype: "float16"}
user_templates:
  chatbot: {context_range: [512, 4096], generation_range: [50, 200], think_time_range: [0.1, 0.5]}
  coding: {context_range: [4096, 25000], generation_range: [100, 500], think_time_range: [0.2, 1.0]}
  document: {context_range: [4096, 16384], generation_range: [200, 800], think_time_range: [0.3, 1.5]}
generation_timing: {none: 0.0, fast: 0.002, realistic: 0.030}
qos_profiles:
  interactive: {target_latency_p95_ms: 50, target_latency_p99_ms: 100, target_latency_p999_ms: 150,
                target_latency_p9999_ms: 200, priority: 3}
  responsive: {target_latency_p95_ms: 100, target_latency_p99_ms: 200, target_latency_p999_ms: 350,
               target_latency_p9999_ms: 500, priority: 2}
  batch: {target_latency_p95_ms: 1000, target_latency_p99_ms: 5000, target_latency_p999_ms: 7500,
          target_latency_p9999_ms: 10000, priority: 1}
qos_distribution: {interactive_probability: 0.15, responsive_threshold: 0.50}
eviction: {max_recursion_depth: 10, target_usage_ratio: 0.8, large_entry_limit_ratio: 0.95,
           max_evictions_hard_cap: 5000, max_evictions_min: 1000}
gpu_backend: {memory_fraction: 0.9, max_eviction_attempts: 100, free_memory_threshold: 0.1}
prefix_cache: {min_prefix_length: 50, max_prefix_entries: 1000, system_prompt_hit_probability: 0.2}
rag: {chunk_size_tokens: 512, top_k_chunks: 5, max_chunk_bytes: 268435456, request_probability: 0.1,
      retrieval_distribution: "zipfian", max_documents: 0, large_model_doc_tokens_min: 1024,
      large_model_doc_tokens_max: 4096, small_model_doc_tokens_min: 4000, small_model_doc_tokens_max: 12000}
conversation: {max_conversations: 1000, max_turns_per_conv: 50, end_conversation_probability: 0.2}
autoscaler: {min_users: 1, max_users: 10000, scale_up_factor: 1.2, scale_down_factor: 0.8,
             consecutive_samples_required: 2}
decode: {batch_size: 32}
sharegpt: {max_context_tokens: 8192, max_generation_tokens: 2048, chars_per_token_estimate: 4}
saturation_detection: {read_latency_p95_threshold_ms: 100, write_latency_p95_threshold_ms: 50,
                       queue_depth_threshold: 100, history_window_size: 10}
validation_limits: {max_users: 100000, max_duration_seconds: 86400, max_gpu_memory_gb: 1024,
                    max_cpu_memory_gb: 16384}
"""

# The keys the file gives that have no effect here, in the file's order.
IGNORED_KEYS = [
    "eviction.max_recursion_depth",
    "eviction.target_usage_ratio",
    "eviction.large_entry_limit_ratio",
    "eviction.max_evictions_hard_cap",
    "eviction.max_evictions_min",
    "gpu_backend.memory_fraction",
    "gpu_backend.max_eviction_attempts",
    "gpu_backend.free_memory_threshold",
    "prefix_cache.min_prefix_length",
    "prefix_cache.max_prefix_entries",
    "rag.max_documents",
    "conversation.max_conversations",
    "sharegpt.max_context_tokens",
    "sharegpt.max_generation_tokens",
    "sharegpt.chars_per_token_estimate",
    "saturation_detection.read_latency_p95_threshold_ms",
    "saturation_detection.write_latency_p95_threshold_ms",
    "saturation_detection.queue_depth_threshold",
    "saturation_detection.history_window_size",
    "validation_limits.max_users",
    "validation_limits.max_duration_seconds",
    "validation_limits.max_gpu_memory_gb",
    "validation_limits.max_cpu_memory_gb",
]


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def with_section(**changes):
    """The full config with some sections' text replaced (each value is the section's YAML, flow style)."""
    text, skipping = "", False
    for line in FULL_CONFIG.splitlines(keepends=True):
        if line[:1].isalpha():  # a section's first line; its flow mapping may go on, indented
            skipping = line.split(":", 1)[0] in changes
        if not skipping:
            text += line
    return text + "".join(f"{section}: {value}\n" for section, value in changes.items())


def resolved(path, *argv, command=RUN):
    return resolve(command, build_parser().parse_args([command, "--config", path, *argv]))


def test_the_full_reference_config_loads_as_the_defaults(tmp_path):
    path = write(tmp_path, FULL_CONFIG)
    loaded = load_config(path, RUN)
    assert loaded.workload == DEFAULT_PROFILE
    config, models = resolved(path)
    # The autoscaler section sets our options: kv-cache.py's scale factors differ from our defaults.
    from_file = {"autoscaler_scale_up_factor": 1.2, "autoscaler_scale_down_factor": 0.8}
    for opt in options_for(RUN):
        assert getattr(config, opt.name) == from_file.get(opt.name, opt.default), opt.name
    assert config.workload == DEFAULT_PROFILE and config.config == path
    # One warning per key that has no effect here, naming the file and the key, in the file's order.
    assert len(config.config_warnings) == len(IGNORED_KEYS)
    for warning, key in zip(config.config_warnings, IGNORED_KEYS):
        assert warning.startswith(f"--config {path}: {key} has no effect here: "), warning
    # The nine model_configs are the built-in models (no warning): the same geometry and bytes per token.
    assert set(models) == set(BUILTIN_MODELS)
    registry = Registry(models)
    for name, builtin in BUILTIN_MODELS.items():
        assert registry.get(name) == builtin
        assert registry.get(name).bytes_per_token == builtin.bytes_per_token


def test_datasize_reads_the_same_file_with_the_same_checks(tmp_path):
    path = write(tmp_path, FULL_CONFIG)
    config, _models = resolved(path, command=DATASIZE)
    assert config.workload == DEFAULT_PROFILE and len(config.config_warnings) == len(IGNORED_KEYS)
    bad = write(tmp_path, with_section(eviction="{target_usage_ratio: high}"), "bad.yaml")
    with pytest.raises(UsageError, match="eviction.target_usage_ratio: must be a number, got 'high'"):
        resolved(bad, command=DATASIZE)


def test_every_ignored_key_warning_says_why(tmp_path):
    warnings = load_config(write(tmp_path, FULL_CONFIG), RUN).warnings
    reasons = {f"{i.section}.{key}": i.reason for i in IGNORED for key, _kind in i.keys}
    assert list(reasons) == IGNORED_KEYS  # the table holds exactly kv-cache.py's keys without effect here
    for warning, key in zip(warnings, IGNORED_KEYS):
        assert warning.endswith(reasons[key])
    assert "--gpu-mem-gb x --num-gpus" in reasons["eviction.target_usage_ratio"]
    assert "--target-saturation" in reasons["saturation_detection.read_latency_p95_threshold_ms"]


@pytest.mark.parametrize(
    "section,value,option,expected",
    [
        ("decode", "{batch_size: 8}", "decode_batch_size", 8),
        ("prefix_cache", "{system_prompt_hit_probability: 0.5}", "prefix_hit_probability", 0.5),
        ("conversation", "{max_turns_per_conv: 7, end_conversation_probability: 0}", "max_turns", 7),
        ("conversation", "{end_conversation_probability: 1}", "end_conversation_probability", 1.0),
        ("rag", "{top_k_chunks: 2, retrieval_distribution: uniform}", "rag_top_k", 2),
        ("rag", "{retrieval_distribution: uniform}", "rag_retrieval_distribution", "uniform"),
        ("rag", "{chunk_size_tokens: 128}", "rag_chunk_tokens", 128),
        ("rag", "{max_chunk_bytes: 65536}", "rag_max_chunk_bytes", 65536),
        ("rag", "{request_probability: 0.75}", "rag_request_probability", 0.75),
        ("rag", "{small_model_doc_tokens_max: 20000}", "rag_small_model_doc_tokens_max", 20000),
    ],
)
def test_a_reference_key_sets_its_option(tmp_path, section, value, option, expected):
    config, _models = resolved(write(tmp_path, with_section(**{section: value})))
    assert getattr(config, option) == expected


def test_the_full_config_gives_every_reference_key_of_the_table_at_its_default():
    data = yaml.safe_load(FULL_CONFIG)
    with_keys = [o for o in OPTIONS if o.reference_key]
    assert len(with_keys) == 18
    # Our autoscaler grows by doubling, then bisects, where kv-cache.py's steps by 1.2 and 0.8.
    differ = {"autoscaler.scale_up_factor": 2.0, "autoscaler.scale_down_factor": 0.5}
    for opt in with_keys:
        section, key = opt.reference_key.split(".")
        if opt.reference_key in differ:
            assert data[section][key] != opt.default == differ[opt.reference_key]
        else:
            assert data[section][key] == opt.default, opt.reference_key


def test_a_typed_flag_wins_over_the_reference_key(tmp_path):
    path = write(tmp_path, with_section(decode="{batch_size: 8}"))
    assert resolved(path, "--decode-batch-size", "4")[0].decode_batch_size == 4


def test_a_value_given_flat_and_by_its_reference_key_is_an_error_naming_both(tmp_path):
    path = write(tmp_path, "decode-batch-size: 16\ndecode: {batch_size: 8}\n")
    with pytest.raises(UsageError) as info:
        load_config(path, RUN)
    assert "decode-batch-size" in info.value.option and "decode.batch_size" in str(info.value)


def test_our_flat_keys_keep_working_beside_the_sections(tmp_path):
    path = write(
        tmp_path,
        "num_users: 5\ndecode_batch_size: 16\ngpu-backend: simulated\n" + FULL_CONFIG.split("decode:", maxsplit=1)[0],
    )
    config, _models = resolved(path)
    assert config.num_users == 5 and config.decode_batch_size == 16 and config.gpu_backend == "simulated"
    # gpu_backend: a string is our option, a mapping the reference's section (both in one file is fine).
    assert any("gpu_backend.memory_fraction" in w for w in config.config_warnings)


def test_user_templates_replace_a_templates_ranges(tmp_path):
    path = write(tmp_path, with_section(user_templates="{chatbot: {context_range: [100, 200]}, coding: {}}"))
    config, _models = resolved(path)
    chatbot = next(t for t in config.workload.templates if t.name == "chatbot")
    assert chatbot.context_tokens == (100, 200)
    builtin = next(t for t in DEFAULT_PROFILE.templates if t.name == "chatbot")
    assert chatbot == dataclasses.replace(builtin, context_tokens=(100, 200))  # the keys left out keep theirs
    assert config.workload.templates[1:] == DEFAULT_PROFILE.templates[1:]
    assert config.as_dict()["workload"]["templates"]["chatbot"]["context_tokens"] == [100, 200]


def test_generation_timing_and_qos_profiles_drive_the_profile(tmp_path):
    path = write(
        tmp_path,
        with_section(
            generation_timing="{realistic: 0.05}",
            qos_profiles="{batch: {target_latency_p95_ms: 2000, target_latency_p9999_ms: 20000.5, priority: 0}}",
        ),
    )
    profile = resolved(path)[0].workload
    assert profile.seconds_per_token("realistic") == 0.05 and profile.seconds_per_token("fast") == 0.002
    batch = profile.qos("batch")
    assert batch.targets_ms == (2000.0, 5000.0, 7500.0, 20000.5) and batch.priority == 0
    assert profile.qos("interactive") == DEFAULT_PROFILE.qos("interactive")


def test_qos_distribution_gives_the_shares(tmp_path):
    path = write(tmp_path, with_section(qos_distribution="{interactive_probability: 0.25, responsive_threshold: 0.75}"))
    shares = [q.share for q in resolved(path)[0].workload.qos_classes]
    assert [q.name for q in DEFAULT_PROFILE.qos_classes] == ["interactive", "responsive", "batch"]
    assert shares == [0.25, 0.5, 0.25]
    only_p = write(tmp_path, with_section(qos_distribution="{interactive_probability: 0.5}"), "p.yaml")
    assert [q.share for q in resolved(only_p)[0].workload.qos_classes] == [0.5, 0.0, 0.5]  # t stays 0.50


def test_a_model_config_with_another_geometry_is_used_with_a_warning(tmp_path):
    path = write(
        tmp_path,
        "model_configs:\n  tiny-1b: {num_layers: 24, hidden_dim: 1024, num_heads: 8, kv_heads: 4, dtype: bfloat16}\n"
        "  my-model: {name: Mine, num_layers: 2, hidden_dim: 256, num_heads: 4, kv_heads: 2, dtype: float32}\n",
    )
    loaded = load_config(path, RUN)
    registry = Registry(loaded.models)
    assert (
        registry.get("tiny-1b").bytes_per_token == 24 * 4 * 128 * 2 * 2 == 2 * BUILTIN_MODELS["tiny-1b"].bytes_per_token
    )
    assert registry.get("my-model").bytes_per_token == 2 * 2 * 64 * 2 * 4 and registry.get("my-model").dtype == "fp32"
    (warning,) = loaded.warnings
    assert "model_configs.tiny-1b redefines the built-in model tiny-1b" in warning
    assert "layers 12 -> 24" in warning and "dtype fp16 -> bf16" in warning
    assert "24,576 bytes/token before, 49,152 after" in warning


def test_models_and_model_configs_both_define_models_but_not_the_same_one(tmp_path):
    ours = "models:\n  a: {layers: 1, kv_heads: 1, head_dim: 8}\n"
    both = ours + "model_configs:\n  b: {num_layers: 1, kv_heads: 1, kv_dim_per_head: 8}\n"
    registry = Registry(load_config(write(tmp_path, both), RUN).models)
    assert registry.get("a").bytes_per_token == registry.get("b").bytes_per_token == 32
    twice = ours + "model_configs:\n  a: {num_layers: 1, kv_heads: 1, kv_dim_per_head: 8}\n"
    with pytest.raises(UsageError, match="models.a: is also defined in model_configs"):
        load_config(write(tmp_path, twice, "twice.yaml"), RUN)


@pytest.mark.parametrize(
    "text,key,fragment",
    [
        ("user_template: {}\n", "user_template", "did you mean user_templates?"),
        ("eviction: {max_depth: 3}\n", "eviction.max_depth", "allowed: max_recursion_depth"),
        ("decode: {batch: 3}\n", "decode.batch", "allowed: batch_size"),
        ("rag: {top_k: 3}\n", "rag.top_k", "top_k_chunks"),
        ("user_templates: {chat: {}}\n", "user_templates.chat", "allowed: chatbot, coding, document"),
        ("user_templates: {chatbot: {context: [1, 2]}}\n", "user_templates.chatbot.context", "context_range"),
        ("qos_profiles: {gold: {}}\n", "qos_profiles.gold", "interactive, responsive, batch"),
        ("qos_profiles: {batch: {target_p95: 1}}\n", "qos_profiles.batch.target_p95", "target_latency_p95_ms"),
        ("generation_timing: {slow: 1}\n", "generation_timing.slow", "none, fast, realistic"),
        ("qos_distribution: {batch_probability: 1}\n", "qos_distribution.batch_probability", "interactive_probability"),
        ("model_configs: {m: {layers: 2}}\n", "model_configs.m.layers", "num_layers"),
    ],
)
def test_unknown_sections_and_keys_are_errors_naming_the_key_and_the_allowed(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_config(path, RUN)
    message = str(info.value)
    assert f"{path}: {key}" in message or (info.value.option == "--config" and key in message), message
    assert fragment in message


@pytest.mark.parametrize(
    "text,key,fragment",
    [
        ("decode: {batch_size: eight}\n", "decode.batch_size", "must be an integer, got 'eight'"),
        ("decode: {batch_size: -1}\n", "decode.batch_size", "must be >= 0"),
        ("rag: {retrieval_distribution: pareto}\n", "rag.retrieval_distribution", "zipfian, uniform, random"),
        ("prefix_cache: {system_prompt_hit_probability: 2}\n", "prefix_cache.system_prompt_hit_probability", "<= 1"),
        ("eviction: {max_recursion_depth: 2.5}\n", "eviction.max_recursion_depth", "must be an integer, got 2.5"),
        ("autoscaler: {scale_up_factor: fast}\n", "autoscaler.scale_up_factor", "must be a number, got 'fast'"),
        ("sharegpt: {max_context_tokens: true}\n", "sharegpt.max_context_tokens", "must be an integer, got True"),
        ("eviction: [1, 2]\n", "eviction", "must be a mapping"),
        ("user_templates: {chatbot: {context_range: 512}}\n", "user_templates.chatbot.context_range", "[min, max]"),
        (
            "user_templates: {chatbot: {context_range: [1, 2, 3]}}\n",
            "user_templates.chatbot.context_range",
            "[min, max]",
        ),
        (
            "user_templates: {chatbot: {context_range: [900, 100]}}\n",
            "user_templates.chatbot.context_range",
            "min must be <= max",
        ),
        ("user_templates: {chatbot: {context_range: [0, 100]}}\n", "user_templates.chatbot.context_range[0]", ">= 1"),
        (
            "user_templates: {chatbot: {context_range: [1.5, 100]}}\n",
            "user_templates.chatbot.context_range[0]",
            "integer",
        ),
        (
            "user_templates: {chatbot: {think_time_range: [-1, 1]}}\n",
            "user_templates.chatbot.think_time_range[0]",
            ">= 0",
        ),
        ("generation_timing: {fast: -0.1}\n", "generation_timing.fast", ">= 0"),
        ("qos_profiles: {batch: {target_latency_p99_ms: 0}}\n", "qos_profiles.batch.target_latency_p99_ms", "> 0"),
        ("qos_profiles: {batch: {priority: 1.5}}\n", "qos_profiles.batch.priority", "must be an integer"),
        ("qos_distribution: {interactive_probability: 1.5}\n", "qos_distribution.interactive_probability", "<= 1"),
        (
            "qos_distribution: {interactive_probability: 0.6, responsive_threshold: 0.5}\n",
            "qos_distribution",
            "interactive_probability (0.6) must be <= responsive_threshold (0.5)",
        ),
        (
            "model_configs: {m: {num_layers: 0, kv_heads: 1, kv_dim_per_head: 8}}\n",
            "model_configs.m.num_layers",
            ">= 1",
        ),
        (
            "model_configs: {m: {num_layers: 2, kv_heads: 1, kv_dim_per_head: 8, dtype: int3}}\n",
            "model_configs.m.dtype",
            "float16, bfloat16, float32, float8",
        ),
        (
            "model_configs: {m: {num_layers: 2, kv_heads: 1}}\n",
            "model_configs.m.kv_dim_per_head",
            "hidden_dim // num_heads",
        ),
        ("model_configs: {m: {num_layers: 2, kv_dim_per_head: 8}}\n", "model_configs.m.kv_heads", ">= 1"),
        (
            "model_configs: {m: {num_layers: 2, attention_type: mla}}\n",
            "model_configs.m.kv_lora_rank",
            "attention_type: mla",
        ),
        (
            "model_configs: {m: {num_layers: 2, kv_heads: 1, kv_dim_per_head: 8, kv_lora_rank: 4}}\n",
            "model_configs.m.kv_lora_rank",
            "only with attention_type: mla",
        ),
        (
            "model_configs: {m: {num_layers: 2, attention_type: sparse}}\n",
            "model_configs.m.attention_type",
            "mha, gqa, mla",
        ),
        (
            "model_configs: {m: {name: 3, num_layers: 2, kv_heads: 1, kv_dim_per_head: 8}}\n",
            "model_configs.m.name",
            "display name",
        ),
        ("model_configs: {m: [1, 2]}\n", "model_configs.m", "must be a mapping"),
    ],
)
def test_wrong_types_and_values_are_errors_naming_the_key(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_config(path, RUN)
    assert str(info.value).startswith(f"--config {path}: {key}: "), str(info.value)
    assert fragment in str(info.value)


def test_an_mla_model_config_ignores_the_heads(tmp_path):
    text = (
        "model_configs:\n  latent: {num_layers: 4, num_heads: 16, kv_heads: 16, attention_type: mla,\n"
        "           kv_lora_rank: 100, qk_rope_head_dim: 28}\n"
    )
    model = Registry(load_config(write(tmp_path, text), RUN).models).get("latent")
    assert model.is_mla and model.bytes_per_token == 4 * 128 * 2 and model.kv_heads == 0


def test_an_empty_section_changes_nothing(tmp_path):
    loaded = load_config(write(tmp_path, "eviction:\nuser_templates:\ndecode: {}\n"), RUN)
    assert loaded.values == {} and loaded.warnings == () and loaded.workload == DEFAULT_PROFILE
