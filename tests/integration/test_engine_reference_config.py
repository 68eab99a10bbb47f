"""`kvcache run --config` with kv-cache.py's full config.yaml, for real (issue 11, scope item 2)."""

from engine_helpers import kvcache, load

from kvcache.reference_config import IGNORED
from kvcache.workload import DEFAULT_PROFILE
from tests.unit.engine.test_reference_config import FULL_CONFIG  # the one copy of the reference's full file


def test_a_run_takes_the_reference_config_as_it_is_and_its_values_drive(tmp_path):
    changed = FULL_CONFIG.replace("context_range: [512, 4096]", "context_range: [256, 1024]").replace(
        "decode: {batch_size: 32}", "decode: {batch_size: 8}"
    )
    assert changed != FULL_CONFIG and "batch_size: 8" in changed
    config = tmp_path / "full.yaml"
    config.write_text(changed, encoding="utf-8")
    cache = tmp_path / "cache"
    cache.mkdir()
    done = kvcache(
        "run",
        "--config",
        config,
        "--model",
        "tiny-1b",
        "--num-users",
        "2",
        "--duration",
        "2",
        "--gpu-mem-gb",
        "0",
        "--cpu-mem-gb",
        "0",
        "--storage-capacity-gb",
        "1",
        "--cache-dir",
        cache,
        "--output",
        tmp_path / "R.json",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    assert result["status"] == "ok"
    ran = result["config"]
    assert ran["config"] == str(config) and ran["decode_batch_size"] == 8 and ran["num_users"] == 2
    expected = DEFAULT_PROFILE.as_dict()
    expected["templates"]["chatbot"]["context_tokens"] = [256, 1024]
    assert ran["workload"] == expected
    assert ran["prefix_hit_probability"] == 0.2 and ran["max_turns"] == 50 and ran["rag_top_k"] == 5
    assert result["requests"]["completed"] > 0
    # Every key that has no effect here is named in a warning, printed on stderr and kept in the result.
    ignored = [f"{i.section}.{key}" for i in IGNORED for key, _kind in i.keys]
    for key in ignored:
        assert any(key in w for w in result["warnings"]), key
        assert key in done.stderr, key
