"""Atelier: LLM data and checkpoints, SDXL serving, Wav2Lip and MPP skew advice."""

__version__ = "0.1.0"
