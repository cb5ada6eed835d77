"""The face input of a lip-sync run as frames: decoded, resized, rotated and cropped.

A video's frames are all held (as the official code does), so only as many as the audio
needs are read and the memory they take is checked first; a still image is one frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from atelier.core.errors import AtelierError
from atelier.lipsync.infer_config import InferConfig


def _prepare(frame: np.ndarray, cfg: InferConfig) -> np.ndarray:
    import cv2

    if cfg.resize_factor > 1:
        h, w = frame.shape[:2]
        frame = cv2.resize(frame, (w // cfg.resize_factor, h // cfg.resize_factor))
    if cfg.rotate:
        frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
    y1, y2, x1, x2 = cfg.crop
    x2 = frame.shape[1] if x2 == -1 else x2
    y2 = frame.shape[0] if y2 == -1 else y2
    return np.ascontiguousarray(frame[y1:y2, x1:x2])


def read_face_frames(
    cfg: InferConfig, limit: int | None = None
) -> tuple[list[np.ndarray], float, bool]:
    """Frames (after resize/rotate/crop), their fps, and whether the input is a still.

    Only the first `limit` frames are kept (the rest would never be written), and the
    frames are refused up front when holding them would not fit in memory.
    """
    from atelier.lipsync.media import IMAGE_SUFFIXES, iter_frames, read_image, video_fps

    face = Path(cfg.face)
    if face.suffix.lower() in IMAGE_SUFFIXES:
        return [_prepare(read_image(face), cfg)], float(cfg.fps), True
    fps = video_fps(face)
    frames: list[np.ndarray] = []
    for raw in iter_frames(face):
        frames.append(_prepare(raw, cfg))
        if len(frames) == 1 and limit:
            _check_memory(frames[0], limit, face)
        if cfg.static or (limit is not None and len(frames) >= limit):
            break
    if not frames:
        raise AtelierError(f"--face {face}: no frames decoded")
    return frames, fps, cfg.static


def first_frame(face: Path) -> np.ndarray:
    """The first frame of a video or the image: enough to check the geometry flags."""
    from atelier.lipsync.media import IMAGE_SUFFIXES, iter_frames, read_image

    if face.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(face)
    for frame in iter_frames(face):
        return frame
    raise AtelierError(f"--face {face}: no frames decoded")


def _check_memory(frame: np.ndarray, count: int, face: Path) -> None:
    """All frames are held (as the official code does): refuse what cannot fit in RAM."""
    need = frame.nbytes * count * 2  # the frames, and the copies written with the mouth
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return  # not knowable here (non-Linux): go on
    if need > 0.8 * free:
        h, w = frame.shape[:2]
        raise AtelierError(
            f"--face {face}: {count} frames of {w}x{h} need ~{need / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB free; use --resize-factor, --crop or shorter audio"
        )
