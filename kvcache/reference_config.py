"""kv-cache.py's config.yaml, read as it is: its sections beside our own flat option keys in one --config file.

Each section and key either drives our workload with kv-cache.py's meaning (an option through its
`reference_key`, a part of the workload profile, a model) or is accepted with a warning naming the key and
saying why it has no effect here. Unknown sections and keys and wrong types are errors, as in kv-cache.py.
"""

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple

from kvcache import options, value_rules
from kvcache.errors import SHOWN_CHARS, UsageError, clip, shown
from kvcache.models import BUILTIN_MODELS, Model, model_from_reference
from kvcache.options import Option
from kvcache.workload import DEFAULT_PROFILE, PERCENTILE_TARGETS, WorkloadProfile

MODEL_SECTION = "model_configs"
MODELS_DRIVE = (
    "each entry defines a model (num_layers, kv_heads, head_dim = kv_dim_per_head or hidden_dim // num_heads; "
    "kv_lora_rank and qk_rope_head_dim with attention_type: mla; dtype); a built-in name with another geometry "
    "replaces the built-in, with a warning"
)

# user_templates.<template>.<key>: the Template field each [min, max] range sets.
TEMPLATE_RANGES = {
    "context_range": "context_tokens",
    "generation_range": "generation_tokens",
    "think_time_range": "think_seconds",
}
QOS_TARGET_KEYS = tuple(f"target_latency_{p}_ms" for p in PERCENTILE_TARGETS)  # in QosClass.targets_ms order
QOS_PRIORITY_KEY = "priority"
# qos_distribution: p and t give the three classes' shares p, t - p and 1 - t, in the profile's class order.
QOS_DISTRIBUTION_KEYS = ("interactive_probability", "responsive_threshold")

# Bounds of the profile's numbers, so that none can overflow what uses it (the options have theirs in the table).
MAX_TEMPLATE_TOKENS = 10_000_000
MAX_SECONDS = 3600.0  # a think time, or a generation time per token
MAX_TARGET_MS = 86_400_000.0  # a day
MAX_PRIORITY = 1_000_000


@dataclass(frozen=True)
class Ignored:
    """Keys of a section that have no effect here, each with the type kv-cache.py requires, and why."""

    section: str
    keys: Tuple[Tuple[str, str], ...]  # (key, "int" or "float")
    reason: str


IGNORED: Tuple[Ignored, ...] = (
    Ignored(
        "eviction",
        (
            ("max_recursion_depth", "int"),
            ("target_usage_ratio", "float"),
            ("large_entry_limit_ratio", "float"),
            ("max_evictions_hard_cap", "int"),
            ("max_evictions_min", "int"),
        ),
        "our tiers fill to the budgets given (--gpu-mem-gb x --num-gpus, --cpu-mem-gb, --storage-capacity-gb) "
        "and demote LRU entries one tier down until the new one fits: no fill target, no size ratio, a chain "
        "of at most two moves, bounded by the entries held",
    ),
    Ignored(
        "gpu_backend",
        (("memory_fraction", "float"), ("max_eviction_attempts", "int"), ("free_memory_threshold", "float")),
        "the GPU tier is the --gpu-mem-gb budget, not a fraction of a device's memory; no out-of-memory "
        "recovery is simulated",
    ),
    Ignored(
        "prefix_cache",
        (("min_prefix_length", "int"), ("max_prefix_entries", "int")),
        "prefixes are --system-prompts whole prompts, each cached once; no partial-prefix matching",
    ),
    Ignored(
        "rag",
        (("max_documents", "int"),),
        "the --rag-num-docs documents are ingested once and stay cached like any entry, LRU; none is evicted "
        "as a whole document",
    ),
    Ignored(
        "conversation",
        (("max_conversations", "int"),),
        "each user has one conversation at a time, so at most --num-users are active",
    ),
    Ignored(
        "sharegpt",
        (("max_context_tokens", "int"), ("max_generation_tokens", "int"), ("chars_per_token_estimate", "int")),
        "kvcache's ShareGPT replay (--dataset-path) caps contexts and replies at kv-cache.py's fixed limits "
        "(16384 and 2048 tokens) and counts tokens with tiktoken or 4 characters per token, as kv-cache.py does: "
        "kv-cache.py does not read these keys either",
    ),
    Ignored(
        "saturation_detection",
        (
            ("read_latency_p95_threshold_ms", "float"),
            ("write_latency_p95_threshold_ms", "float"),
            ("queue_depth_threshold", "int"),
            ("history_window_size", "int"),
        ),
        "the qos autoscaler judges each step by the QoS classes' own p95 targets (qos_profiles) times "
        "--target-saturation, and the capacity autoscaler by storage bandwidth, not by these thresholds",
    ),
    Ignored(
        "validation_limits",
        (
            ("max_users", "int"),
            ("max_duration_seconds", "int"),
            ("max_gpu_memory_gb", "int"),
            ("max_cpu_memory_gb", "int"),
        ),
        "kvcache's own limits apply: `kvcache describe` gives each option's minimum and maximum",
    ),
)


def option_keys() -> Dict[str, Dict[str, Option]]:
    """section -> key -> the option it sets, from the table's reference_key fields (read at each call)."""
    found: Dict[str, Dict[str, Option]] = {}
    for opt in options.OPTIONS:
        if opt.reference_key:
            section, key = opt.reference_key.split(".", 1)
            found.setdefault(section, {})[key] = opt
    return found


def profile_keys(profile: WorkloadProfile = DEFAULT_PROFILE) -> Dict[str, Dict[str, str]]:
    """section -> key path -> the part of the workload profile (as the result's config.workload names it) it sets."""
    classes = [q.name for q in profile.qos_classes]
    return {
        "user_templates": {
            f"{t.name}.{key}": f"templates.{t.name}.{field}"
            for t in profile.templates
            for key, field in TEMPLATE_RANGES.items()
        },
        "generation_timing": {
            mode: f"generation_seconds_per_token.{mode}" for mode, _seconds in profile.generation_timing
        },
        "qos_profiles": {
            f"{name}.{key}": f"qos_classes.{name}.{part}"
            for name in classes
            for key, part in [(k, f"targets_ms.{p}") for k, p in zip(QOS_TARGET_KEYS, PERCENTILE_TARGETS)]
            + [(QOS_PRIORITY_KEY, "priority")]
        },
        "qos_distribution": {
            QOS_DISTRIBUTION_KEYS[0]: f"qos_classes.{classes[0]}.share",
            QOS_DISTRIBUTION_KEYS[1]: f"qos_classes.{classes[1]}.share and qos_classes.{classes[2]}.share "
            f"({classes[0]}: p, {classes[1]}: t - p, {classes[2]}: 1 - t)",
        },
    }


def section_names() -> List[str]:
    """Every section of kv-cache.py's config.yaml that --config reads."""
    names = [MODEL_SECTION, *profile_keys()]
    for section in [*option_keys(), *(i.section for i in IGNORED)]:
        if section not in names:
            names.append(section)
    return names


def _section_keys(section: str) -> List[str]:
    """The keys a flat (option or ignored) section allows, in the table's order."""
    keys = list(option_keys().get(section, {}))
    for ignored in IGNORED:
        if ignored.section == section:
            keys += [key for key, _kind in ignored.keys]
    return keys


@dataclass(frozen=True)
class ReferenceConfig:
    """What the kv-cache.py sections of a config file gave."""

    values: Dict[str, Any]  # option name -> checked value
    keys: Dict[str, str]  # option name -> the section.key that set it
    profile: WorkloadProfile
    models: Dict[str, Model]
    warnings: Tuple[str, ...]


def _mapping(value: Any, where: str, allowed) -> Mapping:
    if value is None:  # `section:` with nothing under it
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(where, f"must be a mapping; keys: {clip(', '.join(allowed), 200)}")
    return value


def _unknown(where: str, key: Any, allowed) -> UsageError:
    # A shortened key (top_k for top_k_chunks) is as likely a slip as a misspelt one.
    close = [name for name in allowed if str(key) and name.startswith(str(key))]
    close = close or difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return UsageError(
        f"{where}.{clip(str(key), SHOWN_CHARS)}", f"unknown key{hint}; allowed: {clip(', '.join(allowed), 120)}"
    )


def _number(value: Any, where: str, kind: str, minimum: float, maximum: float, exclusive: bool = False) -> Any:
    checked, problem = value_rules.check(
        kind, value, minimum=minimum, maximum=maximum, exclusive_minimum=exclusive, default=0
    )
    if problem:
        raise UsageError(where, problem)
    return checked


def _range(value: Any, where: str, kind: str, minimum: float, maximum: float) -> Tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise UsageError(where, f"must be a [min, max] list, got {shown(value)}")
    low, high = (_number(v, f"{where}[{i}]", kind, minimum, maximum) for i, v in enumerate(value))
    if low > high:
        raise UsageError(where, f"min must be <= max, got {shown(value)}")
    return low, high


def _templates(value: Any, where: str, profile: WorkloadProfile) -> WorkloadProfile:
    by_name = {t.name: t for t in profile.templates}
    for name, spec in _mapping(value, where, by_name).items():
        if name not in by_name:
            raise _unknown(where, name, by_name)
        changes = {}
        for key, given in _mapping(spec, f"{where}.{name}", TEMPLATE_RANGES).items():
            if key not in TEMPLATE_RANGES:
                raise _unknown(f"{where}.{name}", key, TEMPLATE_RANGES)
            field = TEMPLATE_RANGES[key]
            if field == "think_seconds":
                changes[field] = _range(given, f"{where}.{name}.{key}", "float", 0, MAX_SECONDS)
            else:
                changes[field] = _range(given, f"{where}.{name}.{key}", "int", 1, MAX_TEMPLATE_TOKENS)
        by_name[name] = dataclasses.replace(by_name[name], **changes)
    return dataclasses.replace(profile, templates=tuple(by_name.values()))


def _generation_timing(value: Any, where: str, profile: WorkloadProfile) -> WorkloadProfile:
    timing = dict(profile.generation_timing)
    for mode, seconds in _mapping(value, where, timing).items():
        if mode not in timing:
            raise _unknown(where, mode, timing)
        timing[mode] = _number(seconds, f"{where}.{mode}", "float", 0, MAX_SECONDS)
    return dataclasses.replace(profile, generation_timing=tuple(timing.items()))


def _qos_profiles(value: Any, where: str, profile: WorkloadProfile) -> WorkloadProfile:
    by_name = {q.name: q for q in profile.qos_classes}
    allowed = (*QOS_TARGET_KEYS, QOS_PRIORITY_KEY)
    for name, spec in _mapping(value, where, by_name).items():
        if name not in by_name:
            raise _unknown(where, name, by_name)
        targets, priority = list(by_name[name].targets_ms), by_name[name].priority
        for key, given in _mapping(spec, f"{where}.{name}", allowed).items():
            if key == QOS_PRIORITY_KEY:
                priority = _number(given, f"{where}.{name}.{key}", "int", 0, MAX_PRIORITY)
            elif key in QOS_TARGET_KEYS:
                targets[QOS_TARGET_KEYS.index(key)] = _number(
                    given, f"{where}.{name}.{key}", "float", 0, MAX_TARGET_MS, exclusive=True
                )
            else:
                raise _unknown(f"{where}.{name}", key, allowed)
        by_name[name] = dataclasses.replace(by_name[name], targets_ms=tuple(targets), priority=priority)
    return dataclasses.replace(profile, qos_classes=tuple(by_name.values()))


def _qos_distribution(value: Any, where: str, profile: WorkloadProfile) -> WorkloadProfile:
    first, second, third = profile.qos_classes  # kv-cache.py's rule is for its three classes
    given = {QOS_DISTRIBUTION_KEYS[0]: first.share, QOS_DISTRIBUTION_KEYS[1]: first.share + second.share}
    for key, number in _mapping(value, where, QOS_DISTRIBUTION_KEYS).items():
        if key not in given:
            raise _unknown(where, key, QOS_DISTRIBUTION_KEYS)
        given[key] = _number(number, f"{where}.{key}", "float", 0, 1)
    p, t = given.values()
    if p > t:
        raise UsageError(where, f"{QOS_DISTRIBUTION_KEYS[0]} ({p:g}) must be <= {QOS_DISTRIBUTION_KEYS[1]} ({t:g})")
    shares = (p, t - p, 1 - t)
    classes = tuple(dataclasses.replace(q, share=share) for q, share in zip(profile.qos_classes, shares))
    return dataclasses.replace(profile, qos_classes=classes)


_PROFILE_READERS = {
    "user_templates": _templates,
    "generation_timing": _generation_timing,
    "qos_profiles": _qos_profiles,
    "qos_distribution": _qos_distribution,
}


def _models(value: Any, where: str, warnings: List[str]) -> Dict[str, Model]:
    models: Dict[str, Model] = {}
    for name, spec in _mapping(value, where, ["one per model name"]).items():
        model = model_from_reference(str(name), spec, f"{where}.{clip(str(name), SHOWN_CHARS)}")
        builtin = BUILTIN_MODELS.get(model.name)
        if builtin is not None and (model.layers, model.hidden_dim) == (builtin.layers, builtin.hidden_dim):
            # kv-cache.py gives no parameter count: the built-in's, for the same layers and width, stays.
            model = dataclasses.replace(model, active_params=builtin.active_params, attention_dim=builtin.attention_dim)
        if builtin is not None and model != builtin:
            changed = [
                f"{f.name} {getattr(builtin, f.name)} -> {getattr(model, f.name)}"
                for f in dataclasses.fields(Model)
                if getattr(builtin, f.name) != getattr(model, f.name)
            ]
            warnings.append(
                f"{where}.{model.name} redefines the built-in model {model.name} ({', '.join(changed)}): "
                f"{builtin.bytes_per_token:,} bytes/token before, {model.bytes_per_token:,} after; "
                "the file's model is used"
            )
        models[model.name] = model
    return models


def read(sections: Mapping[str, Any], where: str) -> ReferenceConfig:
    """The kv-cache.py sections of a config file (section name -> value); `where` is `--config FILE`."""
    values: Dict[str, Any] = {}
    keys: Dict[str, str] = {}
    warnings: List[str] = []
    profile, models = DEFAULT_PROFILE, {}
    by_option_key = option_keys()
    for section, value in sections.items():
        at = f"{where}: {section}"
        if section == MODEL_SECTION:
            models = _models(value, at, warnings)
            continue
        if section in _PROFILE_READERS:
            profile = _PROFILE_READERS[section](value, at, profile)
            continue
        allowed = _section_keys(section)
        ignored = {key: (kind, i.reason) for i in IGNORED if i.section == section for key, kind in i.keys}
        for key, given in _mapping(value, at, allowed).items():
            opt = by_option_key.get(section, {}).get(key)
            if opt is not None:
                values[opt.name] = options.check_value(opt, given, f"{at}.{key}")
                keys[opt.name] = f"{section}.{key}"
            elif key in ignored:
                kind, reason = ignored[key]
                _checked, problem = value_rules.check(kind, given, default=0)
                if problem:
                    raise UsageError(f"{at}.{key}", problem)
                warnings.append(f"{at}.{key} has no effect here: {reason}")
            else:
                raise _unknown(at, key, allowed)
    return ReferenceConfig(values, keys, profile, models, tuple(warnings))
