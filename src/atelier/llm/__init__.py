"""LLM data and checkpoints: Megatron indexed datasets and (later) checkpoint conversion."""
