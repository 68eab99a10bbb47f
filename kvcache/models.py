"""The one model registry: bytes per token derived from each model's attention architecture.

Used by `run`, `datasize` and every capacity check, so sizes never disagree.
"""

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from kvcache import value_rules
from kvcache.errors import SHOWN_CHARS, UsageError, clip, shown

BYTES_PER_ELEMENT = {"fp16": 2, "bf16": 2, "fp8": 1, "fp32": 4}


@dataclass(frozen=True)
class Model:
    """A transformer's KV-cache geometry. MLA models set kv_lora_rank and qk_rope_dim instead of heads."""

    name: str
    layers: int
    kv_heads: int = 0
    head_dim: int = 0
    kv_lora_rank: int = 0
    qk_rope_dim: int = 0
    dtype: str = "fp16"
    hidden_dim: int = 0  # the model's hidden size (0: not given); RAG's document sizes and prefill's attention use it
    # Prefill's compute, for the break-even against recompute (kvcache.break_even); 0: not known.
    active_params: int = 0  # parameters used per token (a mixture of experts: the active ones)
    attention_dim: int = 0  # query heads x their head size (0: hidden_dim)

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def bytes_per_token(self) -> int:
        width = BYTES_PER_ELEMENT[self.dtype]
        if self.is_mla:
            # Multi-head latent attention caches one compressed latent plus the rotary key per layer.
            return self.layers * (self.kv_lora_rank + self.qk_rope_dim) * width
        # K and V, each kv_heads x head_dim per layer.
        return self.layers * self.kv_heads * self.head_dim * 2 * width


BUILTIN_MODELS: Dict[str, Model] = {
    m.name: m
    for m in (
        # Parameter counts as their model cards give them; MoE models (deepseek-v3, gpt-oss) count active ones.
        Model("tiny-1b", layers=12, kv_heads=4, head_dim=128, hidden_dim=1024, active_params=1_000_000_000),
        Model("mistral-7b", layers=32, kv_heads=8, head_dim=128, hidden_dim=4096, active_params=7_240_000_000),
        Model("llama2-7b", layers=32, kv_heads=32, head_dim=128, hidden_dim=4096, active_params=6_740_000_000),
        Model("llama3.1-8b", layers=32, kv_heads=8, head_dim=128, hidden_dim=4096, active_params=8_030_000_000),
        Model(
            "llama3.1-70b-instruct",
            layers=80,
            kv_heads=8,
            head_dim=128,
            hidden_dim=8192,
            active_params=70_600_000_000,
        ),
        # 128 query heads: keys of 128 + 64 (rotary) and values of 128 per head, 20,480 on average.
        Model(
            "deepseek-v3",
            layers=61,
            kv_lora_rank=512,
            qk_rope_dim=64,
            hidden_dim=7168,
            active_params=37_000_000_000,
            attention_dim=20_480,
        ),
        Model(
            "qwen3-32b",
            layers=64,
            kv_heads=8,
            head_dim=128,
            hidden_dim=5120,
            active_params=32_800_000_000,
            attention_dim=8192,
        ),
        Model(
            "gpt-oss-120b",
            layers=36,
            kv_heads=8,
            head_dim=64,
            hidden_dim=2880,
            active_params=5_100_000_000,
            attention_dim=4096,
        ),
        Model(
            "gpt-oss-20b",
            layers=24,
            kv_heads=8,
            head_dim=64,
            hidden_dim=2880,
            active_params=3_600_000_000,
            attention_dim=4096,
        ),
    )
}

_INT_FIELDS = ("layers", "kv_heads", "head_dim", "kv_lora_rank", "qk_rope_dim")
# Optional: what the break-even against recompute needs (kvcache.break_even); 0 when not given.
_COMPUTE_FIELDS = ("active_params", "hidden_dim", "attention_dim")


def model_from_mapping(name: str, spec: Mapping) -> Model:
    """Build a user-defined model from a config mapping; errors name `models.<name>.<field>`."""
    where = f"models.{clip(name, SHOWN_CHARS)}"
    if not isinstance(spec, Mapping):
        raise UsageError(where, "must be a mapping of layers, kv_heads, head_dim (or kv_lora_rank, qk_rope_dim)")
    allowed = _INT_FIELDS + _COMPUTE_FIELDS + ("dtype",)
    unknown = sorted(str(key) for key in set(spec) - set(allowed))  # keys of any YAML type
    if unknown:
        raise UsageError(f"{where}.{clip(unknown[0], SHOWN_CHARS)}", f"unknown key; allowed: {', '.join(allowed)}")
    values = {}
    for field in _INT_FIELDS + _COMPUTE_FIELDS:
        value = spec.get(field, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"{where}.{field}", f"must be a non-negative integer, got {shown(value)}")
        values[field] = value
    dtype = spec.get("dtype", "fp16")
    if not isinstance(dtype, str):
        raise UsageError(f"{where}.dtype", f"must be one of {', '.join(BYTES_PER_ELEMENT)}, got {shown(dtype)}")
    if dtype not in BYTES_PER_ELEMENT:
        raise UsageError(f"{where}.dtype", f"must be one of {', '.join(BYTES_PER_ELEMENT)}, got {shown(dtype)}")
    if values["layers"] < 1:
        raise UsageError(f"{where}.layers", "must be at least 1")
    mla = values["kv_lora_rank"] > 0
    for field in ("kv_heads", "head_dim"):
        if not mla and values[field] < 1:
            raise UsageError(f"{where}.{field}", "needs kv_heads and head_dim >= 1, or kv_lora_rank (MLA) >= 1")
        if mla and values[field]:
            raise UsageError(f"{where}.{field}", "an MLA model (kv_lora_rank) takes no kv_heads or head_dim")
    return Model(name=name, dtype=dtype, **values)


# kv-cache.py's `model_configs` entries: its dtype names, and its fields with the type each must have.
REFERENCE_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float8": "fp8"}
REFERENCE_ATTENTION = ("mha", "gqa", "mla")
_REFERENCE_INT_FIELDS = (
    "num_layers",
    "hidden_dim",
    "num_heads",
    "kv_heads",
    "kv_dim_per_head",
    "kv_lora_rank",
    "qk_rope_head_dim",
)
_REFERENCE_FIELDS = ("name", *_REFERENCE_INT_FIELDS, "attention_type", "dtype")


def _reference_field(spec: Mapping, field: str, where: str, minimum: int = 0) -> int:
    value, problem = value_rules.check("int", spec.get(field, 0), minimum=minimum, default=0)
    if problem:
        raise UsageError(f"{where}.{field}", problem)
    return value


def _reference_choice(spec: Mapping, field: str, where: str, choices, default: str) -> str:
    value = spec.get(field, default)
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"{where}.{field}", value_rules.choices_problem(choices, value))
    return value


def model_from_reference(name: str, spec: Any, where: str) -> Model:
    """A model from an entry of kv-cache.py's `model_configs`, with its meaning: head_dim is kv_dim_per_head, or
    hidden_dim // num_heads when that is not given; an MLA model caches kv_lora_rank + qk_rope_head_dim per layer.
    `name` in the entry is a display name: the key names the model. Errors start with `where` (the entry)."""
    if not isinstance(spec, Mapping):
        raise UsageError(where, f"must be a mapping of {', '.join(_REFERENCE_FIELDS)}")
    unknown = sorted(str(key) for key in set(spec) - set(_REFERENCE_FIELDS))
    if unknown:
        raise UsageError(
            f"{where}.{clip(unknown[0], SHOWN_CHARS)}", f"unknown key; allowed: {', '.join(_REFERENCE_FIELDS)}"
        )
    if "name" in spec and (not isinstance(spec["name"], str) or not spec["name"]):
        raise UsageError(f"{where}.name", f"must be a display name (a string), got {shown(spec['name'])}")
    dtype = REFERENCE_DTYPES[_reference_choice(spec, "dtype", where, tuple(REFERENCE_DTYPES), "float16")]
    attention = _reference_choice(spec, "attention_type", where, REFERENCE_ATTENTION, "mha")
    fields = {field: _reference_field(spec, field, where) for field in _REFERENCE_INT_FIELDS}
    if fields["num_layers"] < 1:
        raise UsageError(f"{where}.num_layers", f"must be >= 1, got {shown(spec.get('num_layers'))}")
    common = {"name": name, "layers": fields["num_layers"], "dtype": dtype, "hidden_dim": fields["hidden_dim"]}
    if attention == "mla":
        if fields["kv_lora_rank"] < 1:
            raise UsageError(f"{where}.kv_lora_rank", "must be >= 1 with attention_type: mla")
        # The heads do not shape an MLA cache: one latent per layer is cached, whatever the heads.
        return Model(kv_lora_rank=fields["kv_lora_rank"], qk_rope_dim=fields["qk_rope_head_dim"], **common)
    for field in ("kv_lora_rank", "qk_rope_head_dim"):
        if fields[field]:
            raise UsageError(f"{where}.{field}", "applies only with attention_type: mla")
    if fields["kv_heads"] < 1:
        raise UsageError(f"{where}.kv_heads", "must be >= 1 (the key/value heads whose K and V are cached)")
    head_dim = fields["kv_dim_per_head"]
    if not head_dim:
        if fields["num_heads"] < 1 or fields["hidden_dim"] < fields["num_heads"]:
            raise UsageError(
                f"{where}.kv_dim_per_head",
                "is needed unless hidden_dim and num_heads are given (head_dim = hidden_dim // num_heads >= 1)",
            )
        head_dim = fields["hidden_dim"] // fields["num_heads"]
    return Model(kv_heads=fields["kv_heads"], head_dim=head_dim, **common)


class Registry:
    """Built-in models plus those a user defines in a config file: `models:` specs, which may not reuse a
    built-in name, and models already built (from kv-cache.py's `model_configs`), which may replace one."""

    def __init__(self, user_models: Optional[Mapping] = None):
        self._models = dict(BUILTIN_MODELS)
        for name, spec in (user_models or {}).items():
            if isinstance(spec, Model):
                self._models[str(name)] = spec
                continue
            if str(name) in BUILTIN_MODELS:
                raise UsageError(
                    f"models.{clip(str(name), SHOWN_CHARS)}", "is a built-in model; give your model another name"
                )
            self._models[str(name)] = model_from_mapping(str(name), spec)

    def get(self, name: str) -> Model:
        try:
            return self._models[name]
        except KeyError:
            choices = clip(", ".join(self._models), 200)  # a config file may define many models
            raise UsageError("--model", f"unknown model {shown(name)}; choose one of: {choices}") from None
