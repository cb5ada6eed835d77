"""The parameters of one lip-sync run (`InferConfig`) and their checks, before any work.

`check_config` checks everything that needs no media, `check_geometry` the frame-dependent
flags against the first frame, so a bad flag fails in a second with one line naming it,
for library callers as for the CLI. Apart from `infer.py`, which runs the model.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from atelier.core.errors import AtelierError
from atelier.lipsync.hparams import HParams, load_hparams


@dataclasses.dataclass
class InferConfig:
    checkpoint_path: Path
    face: Path
    audio: Path
    outfile: Path = Path("results/result_voice.mp4")
    static: bool = False
    fps: float = 25.0  # only for a still image
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right
    face_det_batch_size: int = 16
    wav2lip_batch_size: int = 128
    resize_factor: int = 1
    crop: tuple[int, int, int, int] = (0, -1, 0, -1)  # top, bottom, left, right
    box: tuple[int, int, int, int] = (-1, -1, -1, -1)  # top, bottom, left, right
    rotate: bool = False
    nosmooth: bool = False
    detector: str = "retinaface"
    s3fd_path: Path | None = None
    device: str = "auto"
    hparams: HParams = dataclasses.field(default_factory=load_hparams)


@dataclasses.dataclass
class InferResult:
    outfile: Path
    frames: int
    fps: float
    interpolated: list[int]  # frames whose face box came from neighbours
    seconds: float


def _whole(flag: str, value: object, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AtelierError(f"{flag} {value!r}: must be a whole number")
    if value < lo or (hi is not None and value > hi):
        top = "" if hi is None else f" and <= {hi}"
        raise AtelierError(f"{flag} {value}: must be >= {lo}{top}")


def check_config(cfg: InferConfig) -> None:
    """Every parameter that needs no media, before the model or any media is read.

    Library callers get the same checks as the CLI (whose flag types check ranges at
    parse time); errors name the flag. Frame-dependent checks (`--crop`, `--box`,
    `--resize-factor` vs the frame size) come once the first frame is known.
    """
    from atelier.lipsync.detector_names import DETECTORS

    fps = cfg.fps
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps):
        raise AtelierError(f"--fps {fps!r}: must be a finite number")
    if not 0 < fps <= 1000:
        raise AtelierError(f"--fps {fps:g}: must be > 0 and <= 1000 frames per second")
    _whole("--face-det-batch-size", cfg.face_det_batch_size, 1)
    _whole("--wav2lip-batch-size", cfg.wav2lip_batch_size, 1)
    _whole("--resize-factor", cfg.resize_factor, 1)
    for flag, values in (("--pads", cfg.pads), ("--crop", cfg.crop), ("--box", cfg.box)):
        if len(values) != 4:
            raise AtelierError(f"{flag}: expected 4 numbers (top bottom left right)")
        for v in values:
            _whole(flag, v, -(1 << 20) if flag == "--pads" else -1)
    if cfg.box[0] != -1 and -1 in cfg.box:
        raise AtelierError(
            f"--box {' '.join(map(str, cfg.box))}: give all four edges, or -1 -1 -1 -1"
        )
    if cfg.detector not in DETECTORS:
        raise AtelierError(f"--detector {cfg.detector!r}: use one of {', '.join(DETECTORS)}")
    if cfg.detector == "s3fd" and cfg.box[0] == -1:
        if not cfg.s3fd_path:
            raise AtelierError("--detector s3fd needs --s3fd-path pointing at s3fd.pth")
        if not Path(cfg.s3fd_path).is_file():
            raise AtelierError(f"--s3fd-path {cfg.s3fd_path}: no such file")
    face, audio, out = Path(cfg.face), Path(cfg.audio), Path(cfg.outfile)
    for flag, path in (("--face", face), ("--audio", audio)):
        if path.is_dir():
            raise AtelierError(f"{flag} {path}: is a folder; give a media file")
        if not path.is_file():
            raise AtelierError(f"{flag} {path}: no such file")
    if out.is_dir():
        raise AtelierError(
            f"--outfile {out}: is a folder; give a file name such as {out / 'result.mp4'}"
        )
    if out.exists() and out.resolve() in (face.resolve(), audio.resolve()):
        raise AtelierError(f"--outfile {out}: is an input of this run; choose another name")


def check_geometry(cfg: InferConfig, raw: np.ndarray) -> None:
    """`--resize-factor`, `--crop` and `--box` against the first real frame."""
    h, w = raw.shape[:2]
    if h // cfg.resize_factor < 16 or w // cfg.resize_factor < 16:
        most = max(1, min(h, w) // 16)
        raise AtelierError(
            f"--resize-factor {cfg.resize_factor}: shrinks the {w}x{h} frames below 16 px; "
            f"use at most {most}"
        )
    fh, fw = _resized_shape(raw, cfg)  # after resize and rotate, before the crop
    y1, y2, x1, x2 = cfg.crop
    y2, x2 = fh if y2 == -1 else y2, fw if x2 == -1 else x2
    if not (0 <= y1 < y2 <= fh and 0 <= x1 < x2 <= fw) or y2 - y1 < 16 or x2 - x1 < 16:
        raise AtelierError(
            f"--crop {' '.join(map(str, cfg.crop))}: must be top < bottom <= {fh} and "
            f"left < right <= {fw} (-1: the frame edge), at least 16 px each way"
        )
    if cfg.box[0] != -1:
        ch, cw = y2 - y1, x2 - x1
        by1, by2, bx1, bx2 = cfg.box
        if not (0 <= by1 < by2 <= ch and 0 <= bx1 < bx2 <= cw):
            raise AtelierError(
                f"--box {' '.join(map(str, cfg.box))}: must be top < bottom <= {ch} and "
                f"left < right <= {cw} inside the {cw}x{ch} (cropped) frame"
            )


def _resized_shape(frame: np.ndarray, cfg: InferConfig) -> tuple[int, int]:
    h, w = frame.shape[:2]
    h, w = h // cfg.resize_factor, w // cfg.resize_factor
    return (w, h) if cfg.rotate else (h, w)
