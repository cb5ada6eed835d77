"""Wav2Lip_disc_qual: the visual-quality discriminator of the GAN variant (hq_wav2lip_train).

Judges the lower half of each generated face; its "real" score on generated faces
is the perceptual loss the generator minimises.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from atelier.lipsync.models.conv import nonorm_Conv2d
from atelier.lipsync.models.wav2lip import fold_time


def _c(cin: int, cout: int, k: int, s: int | tuple[int, int], p: int) -> nonorm_Conv2d:
    return nonorm_Conv2d(cin, cout, kernel_size=k, stride=s, padding=p)


class Wav2Lip_disc_qual(nn.Module):  # official class name (checkpoint pickles, user code)
    """Quality discriminator: faces (B, 3, T, 96, 96) -> P(real) per frame, (B*T, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(_c(3, 32, 7, 1, 3)),  # 48x96
            nn.Sequential(_c(32, 64, 5, (1, 2), 2), _c(64, 64, 5, 1, 2)),  # 48
            nn.Sequential(_c(64, 128, 5, 2, 2), _c(128, 128, 5, 1, 2)),  # 24
            nn.Sequential(_c(128, 256, 5, 2, 2), _c(256, 256, 5, 1, 2)),  # 12
            nn.Sequential(_c(256, 512, 3, 2, 1), _c(512, 512, 3, 1, 1)),  # 6
            nn.Sequential(_c(512, 512, 3, 2, 1), _c(512, 512, 3, 1, 1)),  # 3
            nn.Sequential(_c(512, 512, 3, 1, 0), _c(512, 512, 1, 1, 0)),  # 1
        ])  # fmt: skip
        self.binary_pred = nn.Sequential(
            nn.Conv2d(512, 1, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
        )
        self.label_noise = 0.0

    def _lower_half_2d(self, face_sequences: torch.Tensor) -> torch.Tensor:
        x = fold_time(face_sequences, 2)
        return x[:, :, x.size(2) // 2 :]

    def forward(self, face_sequences: torch.Tensor) -> torch.Tensor:
        x = self._lower_half_2d(face_sequences)
        for block in self.face_encoder_blocks:
            x = block(x)
        return self.binary_pred(x).view(len(x), -1)

    def perceptual_forward(self, false_face_sequences: torch.Tensor) -> torch.Tensor:
        """BCE of generated faces against the "real" label, on their own device."""
        pred = self.forward(false_face_sequences)
        return F.binary_cross_entropy(pred, torch.ones_like(pred))
