"""The three conv units every Wav2Lip network is built from.

Each wraps its layers in `conv_block` (an `nn.Sequential`) because the official
state dicts name parameters `...conv_block.0.weight` / `...conv_block.1.running_mean`.
"""

from __future__ import annotations

import torch
from torch import nn


class Conv2d(nn.Module):  # official class name (checkpoint pickles, user code)
    """Conv + BatchNorm + ReLU, with an optional identity shortcut (same shape in and out)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int],
        padding: int | tuple[int, int],
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class nonorm_Conv2d(nn.Module):  # official class name (checkpoint pickles, user code)
    """Conv + LeakyReLU(0.01) without normalisation: the quality discriminator's unit."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int],
        padding: int | tuple[int, int],
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class Conv2dTranspose(nn.Module):  # official class name (checkpoint pickles, user code)
    """Transposed conv + BatchNorm + ReLU: the decoder's upsampling unit."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int,
        padding: int,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))
