"""Lip-sync a face video (or image) to an audio track (official `inference.py`), any device.

Differences from the official script, all on the robustness side: a frame without a
detected face gets its box interpolated from its neighbours (and is reported) instead
of aborting; audio of any format is decoded by PyAV (no ffmpeg binary, no temp wav);
the output mp4 is encoded once, straight from the frames, with the audio muxed in,
under a temporary name renamed into place when complete.

The run's parameters and their checks are `infer_config.py`, reading the face frames is
`face_frames.py`; this module detects, runs Wav2Lip in batches and encodes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from atelier.core.atomic import atomic_file
from atelier.core.device import pick_device
from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.core.progress import progress_bar
from atelier.lipsync.face_frames import first_frame, read_face_frames
from atelier.lipsync.infer_config import InferConfig, InferResult, check_config, check_geometry
from atelier.lipsync.output_paths import check_creatable

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)


def load_wav2lip(path: str | Path, device: str = "auto") -> torch.nn.Module:
    from atelier.lipsync.checkpoint import load_into
    from atelier.lipsync.models import Wav2Lip

    model = Wav2Lip()
    load_into(model, path, "Wav2Lip")
    return model.to(pick_device(device)).eval()


def optimize_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Fold each BatchNorm into its conv and use channels-last where it helps.

    Same weights, same outputs (to float rounding, ~1e-7), about 1.4x faster on CPU: an
    eval-mode BatchNorm is an affine map the conv can absorb. The module tree changes,
    so this is for inference only (never save its state dict as a checkpoint).
    """
    import copy

    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from atelier.lipsync.models.conv import Conv2d, Conv2dTranspose

    fused = copy.deepcopy(model).eval()
    for mod in fused.modules():
        if isinstance(mod, Conv2d | Conv2dTranspose):
            conv, bn = mod.conv_block[0], mod.conv_block[1]
            transpose = isinstance(mod, Conv2dTranspose)
            mod.conv_block = torch.nn.Sequential(fuse_conv_bn_eval(conv, bn, transpose=transpose))
    device = next(fused.parameters()).device
    if device.type in ("cpu", "cuda"):
        fused = fused.to(memory_format=torch.channels_last)
    return fused


def face_boxes(frames: list[np.ndarray], cfg: InferConfig) -> tuple[np.ndarray, list[int]]:
    """(N, 4) boxes as (y1, y2, x1, x2), the official coords order, + interpolated frames."""
    from atelier.lipsync.detect import (
        detect_all,
        fill_missing,
        make_detector,
        pad_boxes,
        smooth_boxes,
    )

    if cfg.box[0] != -1:
        y1, y2, x1, x2 = cfg.box
        return np.tile(np.array([y1, y2, x1, x2]), (len(frames), 1)), []
    detector = make_detector(cfg.detector, cfg.s3fd_path, cfg.device)
    found = detect_all(detector, frames, cfg.face_det_batch_size)
    filled = fill_missing(found, str(cfg.face))
    h, w = frames[0].shape[:2]
    boxes = pad_boxes(filled.boxes, cfg.pads, h, w)
    empty = np.nonzero((boxes[:, 2] - boxes[:, 0] < 2) | (boxes[:, 3] - boxes[:, 1] < 2))[0]
    if empty.size:
        i = int(empty[0])
        raise AtelierError(
            f"--pads {' '.join(map(str, cfg.pads))}: leave no face area in frame {i} "
            f"(detected box x {filled.boxes[i, 0]}-{filled.boxes[i, 2]}, "
            f"y {filled.boxes[i, 1]}-{filled.boxes[i, 3]}); use smaller negative pads"
        )
    if not cfg.nosmooth:
        boxes = smooth_boxes(boxes, 5)
    return boxes[:, [1, 3, 0, 2]], filled.missing


def _batches(
    frames: list[np.ndarray],
    boxes: np.ndarray,
    chunks: list[np.ndarray],
    static: bool,
    size: int,
    batch_size: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[int]]]:
    """(faces (B, 6, S, S) float, mels (B, 1, 80, 16), frame indices) like official datagen."""
    import cv2

    faces, mels, idxs = [], [], []
    for i, m in enumerate(chunks):
        idx = 0 if static else i % len(frames)
        y1, y2, x1, x2 = boxes[idx]
        crop = frames[idx][y1:y2, x1:x2]
        faces.append(cv2.resize(crop, (size, size)))
        mels.append(m)
        idxs.append(idx)
        if len(faces) >= batch_size or i == len(chunks) - 1:
            img = np.asarray(faces)
            masked = img.copy()
            masked[:, size // 2 :] = 0
            x = np.concatenate((masked, img), axis=3).transpose(0, 3, 1, 2) / 255.0
            yield x.astype(np.float32), np.asarray(mels, np.float32)[:, None], idxs
            faces, mels, idxs = [], [], []


class _Background:
    """Run `fn(item)` in one worker thread, in order, so encoding overlaps the model.

    PyAV/x264 release the GIL while encoding; the bounded queue keeps memory flat. A
    failure in the worker is re-raised in the caller at the next put or at exit.
    """

    def __init__(self, fn: Callable[[Any], None], depth: int = 64) -> None:
        self.fn = fn
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="atelier-encode", daemon=True)

    def _run(self) -> None:
        while (item := self.queue.get()) is not _STOP:
            if self.error is None:
                try:
                    self.fn(item)
                except BaseException as e:  # handed to the caller
                    self.error = e

    def __call__(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def __enter__(self) -> _Background:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.queue.put(_STOP)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error


_STOP = object()


def infer(cfg: InferConfig) -> InferResult:
    import cv2
    import torch

    from atelier.lipsync.audio import mel_chunks, melspectrogram
    from atelier.lipsync.media import IMAGE_SUFFIXES, VideoWriter, video_fps

    started = time.perf_counter()
    hp = cfg.hparams
    check_config(cfg)
    check_geometry(cfg, first_frame(Path(cfg.face)))  # before audio and model: fail in a second
    check_creatable(Path(cfg.outfile).parent, "--outfile")  # made only when the video is
    from atelier.lipsync.media import decode_audio, resample_mono

    audio = decode_audio(cfg.audio)  # decoded once: the mel and the output's audio track
    wav = resample_mono(audio, hp.sample_rate)
    if wav.size < hp.syncnet_mel_step_size * hp.hop_size:
        raise AtelierError(
            f"--audio {cfg.audio}: {wav.size / hp.sample_rate:.3f} s is shorter than one "
            f"{hp.syncnet_mel_step_size * hp.hop_size / hp.sample_rate:.2f} s window"
        )
    mel = melspectrogram(wav, hp)
    if np.isnan(mel).any():
        raise AtelierError(f"--audio {cfg.audio}: mel has NaN; add a little noise to the audio")
    model = load_wav2lip(cfg.checkpoint_path, cfg.device)  # fail early on a bad checkpoint
    model = optimize_for_inference(model)
    device = next(model.parameters()).device
    layout = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
    # a video's fps decides the number of mel windows; read its frames only as far as needed
    face_is_image = Path(cfg.face).suffix.lower() in IMAGE_SUFFIXES
    fps = float(cfg.fps) if face_is_image else video_fps(cfg.face)
    chunks = mel_chunks(mel, fps, hp)
    frames, fps, static = read_face_frames(cfg, len(chunks))
    log.info("%d frame(s) at %.3f fps from %s", len(frames), fps, cfg.face)
    boxes, missing = face_boxes([frames[0]] if static else frames, cfg)
    if missing:
        log.warning(
            "no face in %d of %d frame(s) (%s); their boxes were interpolated",
            len(missing), len(frames), ", ".join(map(str, missing[:20])),
        )  # fmt: skip

    h, w = frames[0].shape[:2]
    out_path = Path(cfg.outfile)
    fmt = {".mov": "mov", ".mkv": "matroska", ".avi": "avi"}.get(out_path.suffix.lower(), "mp4")
    size = hp.img_size
    with (
        atomic_file(out_path) as tmp,
        VideoWriter(tmp, fps, w, h, audio_source=audio, container_format=fmt) as out,
        _Background(out.write) as write,
        progress_bar("lip-sync", total=len(chunks), unit="frames") as bar,
        torch.inference_mode(),
    ):
        for x, m, idxs in _batches(frames, boxes, chunks, static, size, cfg.wav2lip_batch_size):
            mel_t = torch.from_numpy(m).to(device).contiguous(memory_format=layout)
            face_t = torch.from_numpy(x).to(device).contiguous(memory_format=layout)
            pred = model(mel_t, face_t)
            pred = (pred.float().cpu().numpy().transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)
            for p, idx in zip(pred, idxs, strict=True):
                y1, y2, x1, x2 = boxes[0 if static else idx]
                frame = frames[idx].copy()
                frame[y1:y2, x1:x2] = cv2.resize(p, (x2 - x1, y2 - y1))
                write(frame)
            bar.advance(0, len(idxs))
    seconds = time.perf_counter() - started
    log.info("wrote %s: %d frames at %.3f fps in %.1f s", out_path, len(chunks), fps, seconds)
    return InferResult(out_path, len(chunks), fps, missing, seconds)
