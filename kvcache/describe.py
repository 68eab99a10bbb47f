"""`kvcache describe`: the engine's models and flags as JSON, for the Ansible module to validate against."""

from kvcache import __version__
from kvcache.models import BUILTIN_MODELS
from kvcache.options import DATASIZE, RUN, flags_for


def describe() -> dict:
    return {
        "version": __version__,
        "models": list(BUILTIN_MODELS),
        "commands": {RUN: flags_for(RUN), DATASIZE: flags_for(DATASIZE)},
    }
