"""Atelier's decoder in megatron-core's parameter layout, and its weights from any source."""
