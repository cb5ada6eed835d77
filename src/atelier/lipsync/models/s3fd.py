"""S3FD face detector network (official `face_detection/detection/sfd/net_s3fd.py` layout).

The architecture only: weights come from the user's `s3fd.pth` (the official download
link is dead, so nothing is fetched). Parameter names match so that file loads with
`strict=True`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class L2Norm(nn.Module):
    """Per-position channel L2 normalisation with a learned per-channel scale."""

    def __init__(self, n_channels: int, scale: float = 1.0) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((n_channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _conv(cin: int, cout: int, k: int = 3, s: int = 1, p: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p)


class s3fd(nn.Module):
    """VGG16 trunk + 6 detection heads at strides 4..128; returns [cls1, reg1, ..., cls6, reg6]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1_1, self.conv1_2 = _conv(3, 64), _conv(64, 64)
        self.conv2_1, self.conv2_2 = _conv(64, 128), _conv(128, 128)
        self.conv3_1, self.conv3_2, self.conv3_3 = _conv(128, 256), _conv(256, 256), _conv(256, 256)
        self.conv4_1, self.conv4_2, self.conv4_3 = _conv(256, 512), _conv(512, 512), _conv(512, 512)
        self.conv5_1, self.conv5_2, self.conv5_3 = _conv(512, 512), _conv(512, 512), _conv(512, 512)
        self.fc6 = _conv(512, 1024, 3, 1, 3)
        self.fc7 = _conv(1024, 1024, 1, 1, 0)
        self.conv6_1, self.conv6_2 = _conv(1024, 256, 1, 1, 0), _conv(256, 512, 3, 2, 1)
        self.conv7_1, self.conv7_2 = _conv(512, 128, 1, 1, 0), _conv(128, 256, 3, 2, 1)
        self.conv3_3_norm = L2Norm(256, scale=10)
        self.conv4_3_norm = L2Norm(512, scale=8)
        self.conv5_3_norm = L2Norm(512, scale=5)
        self.conv3_3_norm_mbox_conf = _conv(256, 4)
        self.conv3_3_norm_mbox_loc = _conv(256, 4)
        self.conv4_3_norm_mbox_conf = _conv(512, 2)
        self.conv4_3_norm_mbox_loc = _conv(512, 4)
        self.conv5_3_norm_mbox_conf = _conv(512, 2)
        self.conv5_3_norm_mbox_loc = _conv(512, 4)
        self.fc7_mbox_conf = _conv(1024, 2)
        self.fc7_mbox_loc = _conv(1024, 4)
        self.conv6_2_mbox_conf = _conv(512, 2)
        self.conv6_2_mbox_loc = _conv(512, 4)
        self.conv7_2_mbox_conf = _conv(256, 2)
        self.conv7_2_mbox_loc = _conv(256, 4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        r = F.relu
        h = r(self.conv1_2(r(self.conv1_1(x))))
        h = F.max_pool2d(h, 2, 2)
        h = r(self.conv2_2(r(self.conv2_1(h))))
        h = F.max_pool2d(h, 2, 2)
        f3 = r(self.conv3_3(r(self.conv3_2(r(self.conv3_1(h))))))
        h = F.max_pool2d(f3, 2, 2)
        f4 = r(self.conv4_3(r(self.conv4_2(r(self.conv4_1(h))))))
        h = F.max_pool2d(f4, 2, 2)
        f5 = r(self.conv5_3(r(self.conv5_2(r(self.conv5_1(h))))))
        h = F.max_pool2d(f5, 2, 2)
        f7 = r(self.fc7(r(self.fc6(h))))
        f6_2 = r(self.conv6_2(r(self.conv6_1(f7))))
        f7_2 = r(self.conv7_2(r(self.conv7_1(f6_2))))
        f3, f4, f5 = self.conv3_3_norm(f3), self.conv4_3_norm(f4), self.conv5_3_norm(f5)
        cls1 = self.conv3_3_norm_mbox_conf(f3)
        # max-out background label: 3 background scores -> 1
        bg = torch.max(torch.max(cls1[:, 0:1], cls1[:, 1:2]), cls1[:, 2:3])
        cls1 = torch.cat([bg, cls1[:, 3:4]], dim=1)
        return [
            cls1, self.conv3_3_norm_mbox_loc(f3),
            self.conv4_3_norm_mbox_conf(f4), self.conv4_3_norm_mbox_loc(f4),
            self.conv5_3_norm_mbox_conf(f5), self.conv5_3_norm_mbox_loc(f5),
            self.fc7_mbox_conf(f7), self.fc7_mbox_loc(f7),
            self.conv6_2_mbox_conf(f6_2), self.conv6_2_mbox_loc(f6_2),
            self.conv7_2_mbox_conf(f7_2), self.conv7_2_mbox_loc(f7_2),
        ]  # fmt: skip
