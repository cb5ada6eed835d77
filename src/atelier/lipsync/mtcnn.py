"""MTCNN face detection (the P -> R -> O cascade) on any torch device, batched over frames.

The default offline detector: chosen by measurement on real talking-face footage
(`bench/face_detectors.py`, figures in docs/lipsync.md) over OpenCV's Haar cascade,
which misses near-profile and partly covered faces. The weights are facenet-pytorch's
(see `models/mtcnn.py`); the cascade is the paper's: an image pyramid scanned by P-net,
candidates refined by R-net on 24x24 crops and by O-net on 48x48 crops, each stage
followed by box regression, squaring and non-maximum suppression.

Crops are cut for all candidates of a frame at once with `grid_sample` (sampled at 4x
and average-pooled, so large boxes are not aliased), so the whole cascade is a handful
of batched tensor ops per frame and runs on CUDA or an Ascend NPU as well as the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from atelier.lipsync.detect import Box, _clip_box, nms

if TYPE_CHECKING:
    import torch

THRESHOLDS = (0.6, 0.7, 0.7)  # P, R, O score cut-offs (the paper's)
PYRAMID_FACTOR = 0.709  # each pyramid level is 0.709x the previous (half the area)


class MTCNNDetector:
    """Most confident face per BGR frame, or None; frames are scaled to `max_side` first."""

    def __init__(self, device: str = "auto", max_side: int = 640, min_face: int = 20) -> None:
        import torch

        from atelier.core.device import pick_device
        from atelier.lipsync.models.mtcnn import load_mtcnn

        self.torch = torch
        self.device = pick_device(device)
        self.pnet, self.rnet, self.onet = (n.to(self.device) for n in load_mtcnn())
        self.max_side = max_side
        self.min_face = min_face

    def detect(self, frames: Sequence[np.ndarray]) -> list[Box | None]:
        out: list[Box | None] = [None] * len(frames)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            by_shape.setdefault(f.shape, []).append(i)
        for idx in by_shape.values():
            for i, box in zip(idx, self._detect_same_size([frames[i] for i in idx]), strict=True):
                out[i] = box
        return out

    def _detect_same_size(self, frames: Sequence[np.ndarray]) -> list[Box | None]:
        torch = self.torch
        import torch.nn.functional as F

        h, w = frames[0].shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        with torch.inference_mode():
            rgb = np.stack([f[..., ::-1] for f in frames])
            x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
            x = (x.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125
            if scale < 1.0:
                x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="area")
            cands = [_first_stage(c) for c in self._pnet_all(x)]
            cands = self._refine(x, cands, self.rnet, 24, THRESHOLDS[1], 0.7, "union")
            cands = self._refine(x, cands, self.onet, 48, THRESHOLDS[2], 0.7, "min")
        result: list[Box | None] = []
        for c in cands:
            if len(c) == 0:
                result.append(None)
                continue
            best = c[np.argmax(c[:, 4]), :4] / scale
            result.append(_clip_box(best, h, w))
        return result

    def _pnet_all(self, x: torch.Tensor) -> list[np.ndarray]:
        """Every pyramid level of the batch through P-net: per frame, (K, 9) raw candidates."""
        torch = self.torch
        import torch.nn.functional as F

        n, _, h, w = x.shape
        m = 12.0 / self.min_face
        side = min(h, w) * m
        per_frame: list[list[np.ndarray]] = [[] for _ in range(n)]
        k = 0
        while side * PYRAMID_FACTOR**k >= 12:
            s = m * PYRAMID_FACTOR**k
            k += 1
            level = F.interpolate(x, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            prob, reg = self.pnet(level)
            hit = prob >= THRESHOLDS[0]
            b, yy, xx = (t.cpu().numpy() for t in torch.nonzero(hit, as_tuple=True))
            if b.size == 0:
                continue
            score = prob[hit].float().cpu().numpy()
            offs = reg.permute(0, 2, 3, 1)[hit].float().cpu().numpy()
            # each output cell is a 12x12 window at stride 2 of the scaled image
            x1, y1 = np.floor((2 * xx + 1) / s), np.floor((2 * yy + 1) / s)
            x2, y2 = np.floor((2 * xx + 12) / s), np.floor((2 * yy + 12) / s)
            boxes = np.column_stack([x1, y1, x2, y2, score, offs])
            for i in np.unique(b):
                mine = boxes[b == i]
                per_frame[i].append(mine[nms(mine[:, :5], 0.5)])
        return [np.concatenate(p) if p else np.zeros((0, 9)) for p in per_frame]

    def _refine(
        self,
        x: torch.Tensor,
        cands: list[np.ndarray],
        net: torch.nn.Module,
        size: int,
        thresh: float,
        iou: float,
        mode: str,
    ) -> list[np.ndarray]:
        """Score and regress each frame's candidates with `net` on `size`x`size` crops."""
        out = []
        for n, c in enumerate(cands):
            if len(c) == 0:
                out.append(c)
                continue
            crops = self._crops(x[n], c[:, :4], size)
            prob, reg = net(crops)
            prob, reg = prob.float().cpu().numpy(), reg.float().cpu().numpy()
            keep = prob > thresh
            c, reg = np.column_stack([c[keep, :4], prob[keep]]), reg[keep]
            if len(c) == 0:
                out.append(c)
                continue
            if mode == "union":
                pick = nms(c, iou)
                out.append(_square(_regress(c[pick], reg[pick])))
            else:
                c = _regress(c, reg)
                out.append(c[_nms_min(c, iou)])
        return out

    def _crops(self, img: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
        """(K, 3, size, size) crops of one (3, H, W) image; outside the image is zero."""
        torch = self.torch
        import torch.nn.functional as F

        _, h, w = img.shape
        up = 4  # sample 4x finer, then average: an anti-aliased resize of every crop
        k = len(boxes)
        b = torch.from_numpy(boxes.astype(np.float32)).to(img.device)
        # box edges (x1 .. x2 + 1, pixel-inclusive) in grid_sample's [-1, 1] coordinates
        u1, u2 = 2 * b[:, 0] / w - 1, 2 * (b[:, 2] + 1) / w - 1
        v1, v2 = 2 * b[:, 1] / h - 1, 2 * (b[:, 3] + 1) / h - 1
        t = (torch.arange(size * up, device=img.device, dtype=torch.float32) + 0.5) / (size * up)
        gx = u1[:, None] + (u2 - u1)[:, None] * t[None]  # (K, S)
        gy = v1[:, None] + (v2 - v1)[:, None] * t[None]
        n = size * up
        grid = torch.stack([gx[:, None, :].expand(k, n, n), gy[:, :, None].expand(k, n, n)], -1)
        grid = grid.reshape(1, k * n, n, 2)
        # zero padding in the normalised space is mid-grey; MTCNN pads with black (-1)
        sampled = F.grid_sample(img[None] + 1.0, grid, align_corners=False) - 1.0
        crops = sampled.reshape(3, k, n, n).permute(1, 0, 2, 3)
        return F.avg_pool2d(crops, up)


def _first_stage(c: np.ndarray) -> np.ndarray:
    """P-net candidates of all levels: merged by NMS, regressed, squared; (K, 5)."""
    if len(c) == 0:
        return c[:, :5]
    c = c[nms(c[:, :5], 0.7)]
    return _square(_regress(c[:, :5], c[:, 5:9], plus_one=False))


def _regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """Move each edge by its predicted offset, a fraction of the box side."""
    out = boxes.copy()
    bw = boxes[:, 2] - boxes[:, 0] + (1 if plus_one else 0)
    bh = boxes[:, 3] - boxes[:, 1] + (1 if plus_one else 0)
    out[:, 0] += reg[:, 0] * bw
    out[:, 1] += reg[:, 1] * bh
    out[:, 2] += reg[:, 2] * bw
    out[:, 3] += reg[:, 3] * bh
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square on its longer side, same centre (the nets' input shape)."""
    out = boxes.copy()
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(bw, bh)
    out[:, 0] = boxes[:, 0] + bw / 2 - side / 2
    out[:, 1] = boxes[:, 1] + bh / 2 - side / 2
    out[:, 2], out[:, 3] = out[:, 0] + side, out[:, 1] + side
    return out


def _nms_min(dets: np.ndarray, thresh: float) -> np.ndarray:
    """NMS on overlap / smaller area: drops a box lying inside a better one (O-net stage)."""
    x1, y1, x2, y2, scores = dets[:, :5].T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        ovr = iw * ih / np.minimum(areas[i], areas[rest])
        order = rest[ovr <= thresh]
    return np.asarray(keep, dtype=np.int64)
