"""Wav2Lip generator (official `models/wav2lip.py` layout).

A U-Net: the face encoder sees the masked target frame and a reference frame
(6 channels, 96x96), the audio encoder one mel window; the decoder upsamples the
audio embedding, concatenating the matching encoder feature at every scale.
"""

from __future__ import annotations

import torch
from torch import nn

from atelier.lipsync.models.conv import Conv2d, Conv2dTranspose
from atelier.lipsync.models.syncnet import audio_encoder_layers


def _res(c: int) -> Conv2d:
    return Conv2d(c, c, kernel_size=3, stride=1, padding=1, residual=True)


def _up(cin: int, cout: int) -> Conv2dTranspose:
    return Conv2dTranspose(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1)


def fold_time(x: torch.Tensor, time_dim: int) -> torch.Tensor:
    """(B, ..., T, ...) -> (T*B, ...), time-major, as the official code concatenates."""
    return torch.cat(x.unbind(time_dim), dim=0)


class Wav2Lip(nn.Module):  # official class name (checkpoint pickles, user code)
    """Generator: (mels, faces) -> lower-half-redrawn faces in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(Conv2d(6, 16, kernel_size=7, stride=1, padding=3)),  # 96
            nn.Sequential(Conv2d(16, 32, kernel_size=3, stride=2, padding=1), _res(32), _res(32)),
            nn.Sequential(
                Conv2d(32, 64, kernel_size=3, stride=2, padding=1), _res(64), _res(64), _res(64)
            ),
            nn.Sequential(
                Conv2d(64, 128, kernel_size=3, stride=2, padding=1), _res(128), _res(128)
            ),
            nn.Sequential(
                Conv2d(128, 256, kernel_size=3, stride=2, padding=1), _res(256), _res(256)
            ),
            nn.Sequential(Conv2d(256, 512, kernel_size=3, stride=2, padding=1), _res(512)),  # 3
            nn.Sequential(
                Conv2d(512, 512, kernel_size=3, stride=1, padding=0),
                Conv2d(512, 512, kernel_size=1, stride=1, padding=0),
            ),  # 1
        ])  # fmt: skip
        self.audio_encoder = nn.Sequential(*audio_encoder_layers(with_last_256_residual=False))
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(Conv2d(512, 512, kernel_size=1, stride=1, padding=0)),
            nn.Sequential(
                Conv2dTranspose(1024, 512, kernel_size=3, stride=1, padding=0), _res(512)
            ),  # 3
            nn.Sequential(_up(1024, 512), _res(512), _res(512)),  # 6
            nn.Sequential(_up(768, 384), _res(384), _res(384)),  # 12
            nn.Sequential(_up(512, 256), _res(256), _res(256)),  # 24
            nn.Sequential(_up(320, 128), _res(128), _res(128)),  # 48
            nn.Sequential(_up(160, 64), _res(64), _res(64)),  # 96
        ])  # fmt: skip
        self.output_block = nn.Sequential(
            Conv2d(80, 32, kernel_size=3, stride=1, padding=1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """Audio (B, T, 1, 80, 16) + faces (B, 6, T, 96, 96), or the same without T."""
        batch = audio_sequences.size(0)
        with_time = face_sequences.dim() > 4
        if with_time:
            audio_sequences = fold_time(audio_sequences, 1)
            face_sequences = fold_time(face_sequences, 2)

        feats = []
        x = face_sequences
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)

        x = self.audio_encoder(audio_sequences)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), feats.pop()), dim=1)
        x = self.output_block(x)

        if with_time:
            return torch.stack(torch.split(x, batch, dim=0), dim=2)  # (B, C, T, H, W)
        return x
