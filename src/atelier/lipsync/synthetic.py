"""Real-looking media made at run time for the demo, tests and benchmark (nothing bundled).

The face is scikit-image's public-domain astronaut photograph, moved and scaled
frame to frame so that detection, smoothing and cropping see motion; the voice is
espeak-ng when installed, otherwise syllable-like harmonic tones at about 4 Hz.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from atelier.lipsync.media import VideoWriter, read_audio, write_wav


def face_image() -> np.ndarray:
    """The astronaut portrait as BGR uint8 (512 x 512)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def speech_like(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Voiced syllables: a 110-220 Hz harmonic source gated at ~4 Hz, plus faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 150 + 40 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(pitch) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    gate = np.clip(np.sin(2 * math.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    wav = 0.3 * voice * gate + 0.003 * rng.standard_normal(t.size)
    return (wav / max(1e-6, np.abs(wav).max()) * 0.8).astype(np.float32)


def make_speech_wav(path: str | Path, seconds: float, sample_rate: int = 16000) -> Path:
    """espeak-ng speech when available (trimmed/padded to `seconds`), tones otherwise."""
    path = Path(path)
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak:
        with tempfile.TemporaryDirectory(prefix="atelier-espeak-") as tmp:
            raw = Path(tmp) / "voice.wav"
            text = "The quick brown fox jumps over the lazy dog. " * max(1, int(seconds))
            done = subprocess.run(
                [espeak, "-w", str(raw), text], capture_output=True, check=False, timeout=60
            )
            if done.returncode == 0 and raw.is_file():
                wav = read_audio(raw, sample_rate)[: int(seconds * sample_rate)]
                wav = np.pad(wav, (0, int(seconds * sample_rate) - wav.size))
                write_wav(path, wav, sample_rate)
                return path
    write_wav(path, speech_like(seconds, sample_rate), sample_rate)
    return path


def moving_face_frames(
    n: int, width: int = 320, height: int = 240, no_face: Iterable[int] = ()
) -> list[np.ndarray]:
    """`n` frames of the astronaut drifting and zooming over a grey background.

    Frames listed in `no_face` are plain grey, to exercise missing-detection handling.
    """
    import cv2

    face = face_image()
    blank = set(no_face)
    frames = []
    for i in range(n):
        canvas = np.full((height, width, 3), 96, np.uint8)
        if i not in blank:
            scale = 0.5 * min(width, height) / 240 * (1.0 + 0.08 * math.sin(i / 7))
            side = int(512 * scale)
            img = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
            x0 = int((width - side) / 2 + 0.1 * width * math.sin(i / 11))
            y0 = int((height - side) / 2 + 0.05 * height * math.cos(i / 9))
            xs, ys = max(0, x0), max(0, y0)
            xe, ye = min(width, x0 + side), min(height, y0 + side)
            canvas[ys:ye, xs:xe] = img[ys - y0 : ye - y0, xs - x0 : xe - x0]
        frames.append(canvas)
    return frames


def make_face_video(
    path: str | Path,
    seconds: float = 1.0,
    fps: float = 25.0,
    width: int = 320,
    height: int = 240,
    with_audio: bool = True,
    no_face: Iterable[int] = (),
) -> Path:
    """An mp4 of the moving face, with the speech-like track muxed in (LRS2-style)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = round(seconds * fps)
    with tempfile.TemporaryDirectory(prefix="atelier-synth-") as tmp:
        wav = make_speech_wav(Path(tmp) / "voice.wav", n / fps) if with_audio else None
        with VideoWriter(path, fps, width, height, audio_source=wav) as out:
            for frame in moving_face_frames(n, width, height, no_face):
                out.write(frame)
    return path
