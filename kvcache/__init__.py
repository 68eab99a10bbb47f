"""storagebench.kvcache engine: KV-cache offload benchmark for LLM inference storage."""

__version__ = "0.1.0"
