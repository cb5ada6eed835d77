"""LLM training: Atelier's own trainer on Megatron datasets and checkpoints."""
