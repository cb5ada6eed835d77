"""SyncNet_color: the expert lip-sync discriminator (official `models/syncnet.py` layout).

Input: the lower half of 5 stacked RGB face crops (B, 15, 48, 96) and one mel window
(B, 1, 80, 16); output: L2-normalised 512-d audio and face embeddings whose cosine
similarity is the sync probability.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from atelier.lipsync.models.conv import Conv2d


def _res(c: int) -> Conv2d:
    return Conv2d(c, c, kernel_size=3, stride=1, padding=1, residual=True)


def audio_encoder_layers(with_last_256_residual: bool) -> list[nn.Module]:
    """The mel encoder shared (except one residual unit) by SyncNet and Wav2Lip."""
    layers: list[nn.Module] = [
        Conv2d(1, 32, kernel_size=3, stride=1, padding=1), _res(32), _res(32),
        Conv2d(32, 64, kernel_size=3, stride=(3, 1), padding=1), _res(64), _res(64),
        Conv2d(64, 128, kernel_size=3, stride=3, padding=1), _res(128), _res(128),
        Conv2d(128, 256, kernel_size=3, stride=(3, 2), padding=1), _res(256),
    ]  # fmt: skip
    if with_last_256_residual:
        layers.append(_res(256))
    layers += [
        Conv2d(256, 512, kernel_size=3, stride=1, padding=0),
        Conv2d(512, 512, kernel_size=1, stride=1, padding=0),
    ]
    return layers


class SyncNet_color(nn.Module):  # official class name (checkpoint pickles, user code)
    """Expert discriminator; trained alone, then frozen as Wav2Lip's sync loss."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder = nn.Sequential(
            Conv2d(15, 32, kernel_size=(7, 7), stride=1, padding=3),
            Conv2d(32, 64, kernel_size=5, stride=(1, 2), padding=1), _res(64), _res(64),
            Conv2d(64, 128, kernel_size=3, stride=2, padding=1), _res(128), _res(128), _res(128),
            Conv2d(128, 256, kernel_size=3, stride=2, padding=1), _res(256), _res(256),
            Conv2d(256, 512, kernel_size=3, stride=2, padding=1), _res(512), _res(512),
            Conv2d(512, 512, kernel_size=3, stride=2, padding=1),
            Conv2d(512, 512, kernel_size=3, stride=1, padding=0),
            Conv2d(512, 512, kernel_size=1, stride=1, padding=0),
        )  # fmt: skip
        self.audio_encoder = nn.Sequential(*audio_encoder_layers(with_last_256_residual=True))

    def forward(
        self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        face = self.face_encoder(face_sequences).flatten(1)
        audio = self.audio_encoder(audio_sequences).flatten(1)
        return F.normalize(audio, p=2, dim=1), F.normalize(face, p=2, dim=1)
