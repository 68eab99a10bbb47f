"""storagebench.kvcache engine: KV-cache offload benchmark for LLM inference storage."""

__version__ = "0.1.0"
# The result format this engine writes; here (not in result.py) so that `describe` names it without numpy.
RESULT_SCHEMA = "storagebench.kvcache/result/v1"
