"""Face boxes for every frame (RetinaFace by default, Haar, MTCNN or S3FD): fill, pad, smooth.

The official code raises "Face not detected!" on the first bad frame. Here a frame
without a face gets a box interpolated from its neighbours and is reported; only a
video with no face at all is an error. Boxes are (x1, y1, x2, y2) in pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from atelier.core.errors import AtelierError
from atelier.lipsync.detector_names import DETECTORS

Box = tuple[int, int, int, int]

# Haar boxes stop around the mouth and are slightly wide; S3FD boxes (what Wav2Lip was
# trained on) reach the chin. Fractions of the Haar box side added (top, bottom, left,
# right); negative shrinks.
HAAR_TO_S3FD = (-0.02, 0.18, -0.04, -0.04)


class FaceDetector(Protocol):
    def detect(self, frames: Sequence[np.ndarray]) -> list[Box | None]:
        """One box (the most confident face) or None per BGR frame."""
        ...


class HaarDetector:
    """OpenCV's frontal-face Haar cascade, shipped in opencv-python-headless 4.x."""

    def __init__(self, max_side: int = 480, cascade: str = "haarcascade_frontalface_default.xml"):
        import cv2

        path = Path(cv2.data.haarcascades) / cascade
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise AtelierError(
                f"{path}: Haar cascade missing (opencv-python-headless 5 dropped them; "
                "install 'opencv-python-headless>=4.8,<5' or use --detector s3fd)"
            )
        self.max_side = max_side
        self.roi_side = 240  # tracking windows are searched at this size at most
        self.last: Box | None = None
        self.last_shape: tuple[int, int] | None = None

    def _one(self, frame: np.ndarray, roi: Box | None = None) -> Box | None:
        """Largest face in `frame`, searched only inside `roi` (x1, y1, x2, y2) when given."""
        import cv2

        ox = oy = 0
        if roi is not None:
            ox, oy = roi[0], roi[1]
            frame = frame[roi[1] : roi[3], roi[0] : roi[2]]
        h, w = frame.shape[:2]
        limit = self.max_side if roi is None else self.roi_side
        scale = min(1.0, limit / max(h, w))
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            size = (round(w * scale), round(h * scale))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        # Inside a tracking window the face fills a good part of it: skip tiny scales.
        frac = 0.08 if roi is None else 0.25
        min_side = max(20, int(frac * min(gray.shape)))
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
        )
        if len(found) == 0:
            return None
        x, y, bw, bh = max(found, key=lambda b: b[2] * b[3])
        x, y, bw, bh = (v / scale for v in (x, y, bw, bh))
        top, bottom, left, right = HAAR_TO_S3FD
        x1, x2 = ox + x - left * bw, ox + x + bw + right * bw
        y1, y2 = oy + y - top * bh, oy + y + bh + bottom * bh
        return _clip_box((x1, y1, x2, y2), 10**9, 10**9)  # detect() clips to the frame

    def _window(self, box: Box, h: int, w: int) -> Box:
        """The previous face box grown by 60% on each side: where to look next frame."""
        x1, y1, x2, y2 = box
        mx, my = 0.6 * (x2 - x1), 0.6 * (y2 - y1)
        return _clip_box((x1 - mx, y1 - my, x2 + mx, y2 + my), h, w)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Box | None]:
        """Track across calls: search near the last face first, the whole frame if lost.

        The window only narrows the search (every frame is still detected, nothing is
        propagated), so a wrong window costs a full-frame pass, never a wrong box.
        """
        out: list[Box | None] = []
        for frame in frames:
            h, w = frame.shape[:2]
            box = None
            if self.last is not None and self.last_shape == (h, w):
                box = self._one(frame, self._window(self.last, h, w))
            if box is None:
                box = self._one(frame)
            if box is not None:
                box = _clip_box(box, h, w)
                self.last, self.last_shape = box, (h, w)
            out.append(box)
        return out


class S3FDDetector:
    """The official S3FD detector on any device, with vectorised box decoding."""

    def __init__(self, weights: str | Path, device: str = "auto") -> None:
        import torch

        from atelier.core.device import pick_device
        from atelier.lipsync.checkpoint import load_state_dict
        from atelier.lipsync.models.s3fd import s3fd

        self.device = pick_device(device)
        self.net = s3fd()
        self.net.load_state_dict(load_state_dict(weights), strict=True)
        self.net.to(self.device).eval()
        self.torch = torch

    def raw(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per frame, an (N, 5) array of x1, y1, x2, y2, score after NMS, best first."""
        torch = self.torch
        rgb = np.stack([f[..., ::-1] for f in frames]).astype(np.float32)
        rgb -= np.array([104, 117, 123], np.float32)
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2).to(self.device)
        with torch.no_grad():
            outs = self.net(x)
        per_image: list[list[np.ndarray]] = [[] for _ in frames]
        for level in range(len(outs) // 2):
            cls = torch.softmax(outs[2 * level], dim=1)[:, 1].float().cpu().numpy()
            reg = outs[2 * level + 1].float().cpu().numpy()
            stride = 2 ** (level + 2)
            b_idx, h_idx, w_idx = np.nonzero(cls > 0.05)
            if b_idx.size == 0:
                continue
            cx = stride / 2 + w_idx * stride
            cy = stride / 2 + h_idx * stride
            prior = stride * 4.0
            loc = reg[b_idx, :, h_idx, w_idx]
            bx = cx + loc[:, 0] * 0.1 * prior
            by = cy + loc[:, 1] * 0.1 * prior
            bw = prior * np.exp(loc[:, 2] * 0.2)
            bh = prior * np.exp(loc[:, 3] * 0.2)
            x1, y1 = bx - bw / 2, by - bh / 2
            boxes = np.stack([x1, y1, x1 + bw, y1 + bh, cls[b_idx, h_idx, w_idx]], axis=1)
            for i in np.unique(b_idx):
                per_image[i].append(boxes[b_idx == i])
        result = []
        for parts in per_image:
            dets = np.concatenate(parts) if parts else np.zeros((0, 5), np.float32)
            dets = dets[nms(dets, 0.3)] if len(dets) else dets
            result.append(dets[dets[:, 4] > 0.5])
        return result

    def detect(self, frames: Sequence[np.ndarray]) -> list[Box | None]:
        out: list[Box | None] = []
        for dets in self.raw(frames):
            if len(dets) == 0:
                out.append(None)
                continue
            x1, y1, x2, y2 = (int(v) for v in np.clip(dets[0, :4], 0, None))
            out.append((x1, y1, x2, y2))
        return out


def nms(dets: np.ndarray, thresh: float) -> np.ndarray:
    """Greedy NMS with the official +1 pixel area convention; indices best first."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.nonzero(ovr <= thresh)[0] + 1]
    return np.asarray(keep, dtype=np.int64)


def _clip_box(box: Sequence[float], h: int, w: int) -> Box:
    x1, y1, x2, y2 = box
    return (
        int(max(0, round(x1))),
        int(max(0, round(y1))),
        int(min(w, round(x2))),
        int(min(h, round(y2))),
    )


def make_detector(
    kind: str = "retinaface", s3fd_path: str | Path | None = None, device: str = "auto"
) -> FaceDetector:
    """`retinaface` (default, offline), `opencv` (Haar), `mtcnn`, or `s3fd` (user's weights).

    docs/lipsync.md gives each one's detection rate and speed on real footage.
    """
    if kind == "retinaface":
        from atelier.lipsync.retina import RetinaFaceDetector

        return RetinaFaceDetector(device)
    if kind == "opencv":
        return HaarDetector()
    if kind == "mtcnn":
        from atelier.lipsync.mtcnn import MTCNNDetector

        return MTCNNDetector(device)
    if kind == "s3fd":
        if not s3fd_path:
            raise AtelierError("--detector s3fd needs --s3fd-path pointing at s3fd.pth")
        return S3FDDetector(s3fd_path, device)
    raise AtelierError(f"--detector {kind!r}: use one of {', '.join(DETECTORS)}")


def detect_all(
    detector: FaceDetector, frames: Sequence[np.ndarray], batch_size: int = 16
) -> list[Box | None]:
    """Detect in batches; on out-of-memory halve the batch, as the official code does."""
    out: list[Box | None] = []
    i = 0
    while i < len(frames):
        try:
            out.extend(detector.detect(frames[i : i + batch_size]))
        except RuntimeError as e:
            if "out of memory" not in str(e).lower() or batch_size == 1:
                raise
            batch_size //= 2
            continue
        i += batch_size
    return out


@dataclasses.dataclass
class FilledBoxes:
    boxes: np.ndarray  # (N, 4) int: x1, y1, x2, y2
    missing: list[int]  # frames whose box was interpolated


def fill_missing(boxes: Sequence[Box | None], what: str = "video") -> FilledBoxes:
    """Linear interpolation of absent boxes from the nearest detected neighbours."""
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        raise AtelierError(
            f"{what}: no face detected in any of its {len(boxes)} frame(s); "
            "try another --detector, --resize-factor, --crop or a fixed --box"
        )
    known = np.array([boxes[i] for i in found], dtype=np.float64)
    idx = np.arange(len(boxes))
    cols = [np.interp(idx, found, known[:, c]) for c in range(4)]
    filled = np.rint(np.stack(cols, axis=1)).astype(np.int64)
    return FilledBoxes(filled, [i for i, b in enumerate(boxes) if b is None])


def pad_boxes(boxes: np.ndarray, pads: Sequence[int], height: int, width: int) -> np.ndarray:
    """Official `--pads` (top, bottom, left, right), clipped to the frame."""
    top, bottom, left, right = pads
    out = boxes.copy()
    out[:, 0] = np.maximum(0, boxes[:, 0] - left)
    out[:, 1] = np.maximum(0, boxes[:, 1] - top)
    out[:, 2] = np.minimum(width, boxes[:, 2] + right)
    out[:, 3] = np.minimum(height, boxes[:, 3] + bottom)
    return out


def smooth_boxes(boxes: np.ndarray, window: int = 5) -> np.ndarray:
    """The official in-place forward moving average (integer boxes, so means truncate)."""
    boxes = boxes.copy()
    n = len(boxes)
    for i in range(n):
        win = boxes[n - window :] if i + window > n else boxes[i : i + window]
        boxes[i] = np.mean(win, axis=0)
    return boxes
