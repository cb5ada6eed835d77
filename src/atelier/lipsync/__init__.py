"""Wav2Lip lip-sync: preprocessing, expert SyncNet and Wav2Lip training, inference.

Same job as the official Rudrabha/Wav2Lip scripts, on any device and offline, with
module names that keep the official checkpoints loadable (`strict=True`).
"""
