"""`atelier llm train`: pretraining and full-parameter SFT on Megatron datasets and checkpoints."""
