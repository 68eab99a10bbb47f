"""`kvcache describe`: the option contract the module and the roles read (issue 10, item 1)."""

import io
import json
import subprocess
import sys

from kvcache import RESULT_SCHEMA, __version__
from kvcache.cli import main
from kvcache.describe import describe
from kvcache.models import BUILTIN_MODELS, Registry
from kvcache.options import COMMANDS, OPTIONS, RUN, load_config
from kvcache.reference_config import IGNORED, section_names

OPTION_FIELDS = {
    "name",
    "flag",
    "config_key",
    "type",
    "default",
    "choices",
    "minimum",
    "maximum",
    "exclusive_minimum",
    "nonzero_minimum",
    "multiple_of",
    "unit",
    "help",
    "commands",
    "reference_key",
}
MODEL_FIELDS = {"name", "bytes_per_token", "layers", "kv_heads", "head_dim", "kv_lora_rank", "qk_rope_dim", "dtype",
                "active_params", "attention_dim"}  # fmt: skip


def printed(argv):
    out = io.StringIO()
    assert main(argv, stdout=out, stderr=io.StringIO()) == 0
    return json.loads(out.getvalue())


def test_describe_lists_every_option_of_the_table_with_every_field():
    data = printed(["describe"])
    assert [o["name"] for o in data["options"]] == [o.name for o in OPTIONS]
    for entry, opt in zip(data["options"], OPTIONS):
        assert set(entry) == OPTION_FIELDS, opt.name
        assert entry["flag"] == opt.flag and entry["config_key"] == opt.name
        assert entry["type"] in ("int", "float", "str", "bool") and entry["type"] == opt.kind.__name__
        assert entry["default"] == opt.default and entry["help"] == opt.help
        assert entry["minimum"] == opt.minimum and entry["maximum"] == opt.maximum
        assert entry["exclusive_minimum"] is opt.exclusive_minimum
        assert entry["nonzero_minimum"] == opt.nonzero_minimum and entry["unit"] == opt.unit
        assert entry["multiple_of"] == opt.multiple_of
        assert entry["choices"] == (list(opt.choices) if opt.choices else None)
        assert entry["commands"] and set(entry["commands"]) <= set(data["commands"])
        assert entry["reference_key"] == opt.reference_key


def test_describe_fields_carry_the_values_a_consumer_checks_against():
    by_name = {o["name"]: o for o in describe()["options"]}
    assert by_name["num_users"]["minimum"] == 1 and by_name["num_users"]["unit"] == "users"
    assert by_name["duration"]["exclusive_minimum"] is True and by_name["duration"]["type"] == "float"
    assert by_name["request_rate"]["nonzero_minimum"] == 0.001 and by_name["request_rate"]["unit"] == "requests/s"
    assert by_name["io_engine"]["choices"] == ["direct", "buffered"]
    # a chunk is whole 4 KiB blocks, given in MiB
    chunk = by_name["io_chunk_mib"]
    assert (chunk["type"], chunk["minimum"], chunk["multiple_of"]) == ("float", 4 / 1024, 4 / 1024)
    assert by_name["keep_cache"]["type"] == "bool" and by_name["keep_cache"]["default"] is False
    assert by_name["check_free_bytes"]["default"] is None and by_name["check_free_bytes"]["unit"] == "bytes"
    # the help is the text as a user reads it, not argparse's %-escaped form
    assert "80% of the free space" in by_name["storage_capacity_gb"]["help"]
    # clean's and baseline's flags come from the table like the others
    assert by_name["cache_dir"]["commands"] == ["run", "mlperf run", "clean", "baseline"]
    assert by_name["dry_run"]["commands"] == ["clean"] and by_name["fio"]["commands"] == ["baseline"]
    assert by_name["baseline_read_share"]["maximum"] == 1 and by_name["baseline"]["commands"] == ["run", "mlperf run"]


def test_describe_names_every_command_with_its_help():
    data = describe()
    assert data["commands"] == {name: {"help": text} for name, text in COMMANDS.items()}
    assert {"run", "datasize", "report", "describe", "clean", "baseline", "trace", "mlperf run", "mlperf check"} == set(
        data["commands"]
    )


def test_describe_models_match_the_registry():
    models = describe()["models"]
    assert [m["name"] for m in models] == list(BUILTIN_MODELS)
    registry = Registry()
    for entry in models:
        assert set(entry) == MODEL_FIELDS
        model = registry.get(entry["name"])
        assert entry["bytes_per_token"] == model.bytes_per_token and entry["layers"] == model.layers
        assert entry["dtype"] == model.dtype
        assert entry["active_params"] == model.active_params > 0  # every built-in model's break-even is known
        assert entry["attention_dim"] == (model.attention_dim or model.hidden_dim) > 0
        if model.is_mla:
            assert (entry["kv_lora_rank"], entry["qk_rope_dim"]) == (model.kv_lora_rank, model.qk_rope_dim)
            assert entry["kv_heads"] is None and entry["head_dim"] is None
        else:
            assert (entry["kv_heads"], entry["head_dim"]) == (model.kv_heads, model.head_dim)
            assert entry["kv_lora_rank"] is None and entry["qk_rope_dim"] is None
    by_name = {m["name"]: m for m in models}
    assert by_name["llama3.1-8b"]["bytes_per_token"] == 131072
    assert by_name["deepseek-v3"]["kv_heads"] is None


def test_describe_config_sections_say_what_each_reference_key_drives():
    sections = describe()["config_sections"]
    assert list(sections) == section_names()
    assert {"user_templates", "qos_profiles", "model_configs", "eviction", "validation_limits"} <= set(sections)
    for opt in OPTIONS:
        if opt.reference_key:
            section, key = opt.reference_key.split(".")
            assert sections[section]["options"][key] == opt.name
    for ignored in IGNORED:
        for key, kind in ignored.keys:
            assert sections[ignored.section]["ignored"][key] == {"type": kind, "reason": ignored.reason}
    assert sections["decode"] == {"options": {"batch_size": "decode_batch_size"}}
    assert sections["user_templates"]["profile"]["chatbot.context_range"] == "templates.chatbot.context_tokens"
    assert sections["qos_profiles"]["profile"]["batch.target_latency_p9999_ms"] == "qos_classes.batch.targets_ms.p9999"
    assert "hidden_dim // num_heads" in sections["model_configs"]["models"]


def test_describe_config_sections_are_the_keys_config_files_accept(tmp_path):
    # A file with every option and ignored key describe lists loads, warning once per ignored key.
    by_name = {o.name: o for o in OPTIONS}
    lines = []
    for section, entry in describe()["config_sections"].items():
        keys = {key: by_name[name].default for key, name in entry.get("options", {}).items()}
        keys.update({key: 1 if spec["type"] == "int" else 0.5 for key, spec in entry.get("ignored", {}).items()})
        if keys:
            lines.append(f"{section}: {json.dumps(keys)}\n")
    path = tmp_path / "all.yaml"
    path.write_text("".join(lines), encoding="utf-8")
    loaded = load_config(str(path), RUN)
    assert len(loaded.warnings) == sum(len(i.keys) for i in IGNORED)


def test_describe_names_the_version_and_result_schema_and_json_is_the_same_output():
    data = printed(["describe"])
    assert data["version"] == __version__ and data["result_schema"] == RESULT_SCHEMA
    assert printed(["describe", "--json"]) == data == json.loads(json.dumps(describe()))


def test_describe_stays_light():
    # The module runs describe on every call: it must not pay for numpy or the I/O machinery.
    heavy = ("numpy", "hdrh", "kvcache.benchmark")
    code = f"import sys, kvcache.cli as c; c.main(['describe']); print(sorted(set(sys.modules) & set({heavy!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
