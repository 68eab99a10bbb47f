"""`kvcache describe`: the option contract as JSON, which the Ansible module and roles validate against.

Every option of the table with its flag, type, default, bounds, unit, commands and kv-cache.py config key; the
models with their geometry and bytes per token; what each section of kv-cache.py's config.yaml drives here;
the MLPerf rules; the result schema. Light on purpose: no numpy, nothing that probes the host.
"""

from typing import Any, Dict, List

from kvcache import RESULT_SCHEMA, __version__, options, reference_config
from kvcache.mlperf import rules
from kvcache.models import BUILTIN_MODELS, Model
from kvcache.options import COMMANDS, Option


def option_contract(opt: Option) -> Dict[str, Any]:
    return {
        "name": opt.name,
        "flag": opt.flag,
        "config_key": opt.name,
        "type": opt.kind.__name__,
        "default": opt.default,
        "choices": list(opt.choices) if opt.choices is not None else None,
        "minimum": opt.minimum,
        "maximum": opt.maximum,
        "exclusive_minimum": opt.exclusive_minimum,
        "nonzero_minimum": opt.nonzero_minimum,
        "multiple_of": opt.multiple_of,
        "unit": opt.unit,
        "help": opt.help,
        "commands": list(opt.commands),
        "reference_key": opt.reference_key,
    }


def model_contract(model: Model) -> Dict[str, Any]:
    """A model's geometry; the fields its attention kind does not use are null."""
    return {
        "name": model.name,
        "bytes_per_token": model.bytes_per_token,
        "layers": model.layers,
        "kv_heads": None if model.is_mla else model.kv_heads,
        "head_dim": None if model.is_mla else model.head_dim,
        "kv_lora_rank": model.kv_lora_rank if model.is_mla else None,
        "qk_rope_dim": model.qk_rope_dim if model.is_mla else None,
        "dtype": model.dtype,
        # What the break-even against recompute needs (null: not known).
        "active_params": model.active_params or None,
        "attention_dim": (model.attention_dim or model.hidden_dim) or None,
    }


def config_sections() -> Dict[str, Dict[str, Any]]:
    """Each section of kv-cache.py's config.yaml that --config reads: the keys that set an option (key: option
    name), those that set a part of the workload profile (key path: the part, as the result's config.workload
    names it), the models it defines, and the keys accepted with a warning (their type and why they do nothing)."""
    by_option, by_profile = reference_config.option_keys(), reference_config.profile_keys()
    sections: Dict[str, Dict[str, Any]] = {}
    for section in reference_config.section_names():
        entry: Dict[str, Any] = {}
        if section == reference_config.MODEL_SECTION:
            entry["models"] = reference_config.MODELS_DRIVE
        if section in by_profile:
            entry["profile"] = by_profile[section]
        if section in by_option:
            entry["options"] = {key: opt.name for key, opt in by_option[section].items()}
        ignored = {
            key: {"type": kind, "reason": i.reason}
            for i in reference_config.IGNORED
            if i.section == section
            for key, kind in i.keys
        }
        if ignored:
            entry["ignored"] = ignored
        sections[section] = entry
    return sections


def mlperf_rules() -> Dict[str, Any]:
    """What `kvcache mlperf run` fixes in CLOSED: each option's parameters named by the rules (every other
    workload parameter is the option table's default), the trials, the rest between options, and the options
    a CLOSED run may still set."""
    return {
        "rules": rules.RULES,
        "trials": rules.TRIALS,
        "delay_s": rules.DELAY_S,
        "options": {
            option: {name: rules.closed_parameters(option)[name] for name in rules.fixed_names(option)}
            for option in rules.OPTION_ORDER
        },
        "closed_may_set": list(rules.CLOSED_MAY_SET),
        "workload_parameters": rules.workload_names(),
    }


def describe() -> Dict[str, Any]:
    entries: List[Dict[str, Any]] = [option_contract(opt) for opt in options.OPTIONS]  # the table as it is now
    return {
        "version": __version__,
        "result_schema": RESULT_SCHEMA,
        "commands": {name: {"help": text} for name, text in COMMANDS.items()},
        "options": entries,
        "models": [model_contract(model) for model in BUILTIN_MODELS.values()],
        "config_sections": config_sections(),
        "mlperf": mlperf_rules(),
    }
