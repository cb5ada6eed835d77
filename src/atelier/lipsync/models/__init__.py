"""Networks whose module trees mirror the official Wav2Lip ones, key for key.

The attribute names (`face_encoder_blocks`, `conv_block`, ...) are part of the
checkpoint format: renaming one breaks loading the published weights.
"""

from atelier.lipsync.models.disc import Wav2Lip_disc_qual
from atelier.lipsync.models.syncnet import SyncNet_color
from atelier.lipsync.models.wav2lip import Wav2Lip

__all__ = ["SyncNet_color", "Wav2Lip", "Wav2Lip_disc_qual"]
