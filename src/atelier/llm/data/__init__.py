"""Raw corpora and instruction sets -> Megatron indexed datasets."""
