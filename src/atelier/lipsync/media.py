"""Video and audio through PyAV, which bundles its own ffmpeg: no ffmpeg binary needed.

Frames are handed around as BGR uint8 arrays (H, W, 3), the layout the official
code gets from OpenCV, so crops and saved JPEGs match it. Every decode error becomes
an `AtelierError` naming the file.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from atelier.core.errors import AtelierError

if TYPE_CHECKING:
    import av

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _open(path: str | Path) -> av.container.InputContainer:
    import av

    path = Path(path)
    if not path.is_file():
        raise AtelierError(f"{path}: no such file")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise AtelierError(f"{path}: not readable media ({e})") from e


def video_fps(path: str | Path) -> float:
    """Average frame rate of the first video stream (25.0 when the container has none)."""
    with _open(path) as container:
        if not container.streams.video:
            raise AtelierError(f"{path}: has no video stream")
        rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
        return float(rate) if rate else 25.0


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode the first video stream frame by frame as BGR uint8."""
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise AtelierError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="bgr24")
        except av.FFmpegError as e:
            raise AtelierError(f"{path}: decoding failed ({e})") from e


def read_image(path: str | Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise AtelierError(f"{path}: not a readable image")
    return img


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at `sample_rate` from any audio or video file.

    Channels are averaged and the rate converted with librosa (soxr), which is what
    `librosa.load(path, sr=...)` in the official code does.
    """
    import av

    chunks: list[np.ndarray] = []
    native_rate = 0
    with _open(path) as container:
        if not container.streams.audio:
            raise AtelierError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        native_rate = stream.rate or stream.codec_context.sample_rate
        channels = stream.codec_context.channels or 1
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=native_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(channels, -1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(channels, -1))
        except av.FFmpegError as e:
            raise AtelierError(f"{path}: audio decoding failed ({e})") from e
    if not chunks:
        raise AtelierError(f"{path}: the audio stream is empty")
    wav = np.concatenate(chunks, axis=1).astype(np.float32).mean(axis=0)
    if native_rate != sample_rate:
        import librosa

        wav = librosa.resample(wav, orig_sr=native_rate, target_sr=sample_rate)
    return np.ascontiguousarray(wav, dtype=np.float32)


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV (what `ffmpeg -i video.mp4 audio.wav` gives for LRS2)."""
    pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def fps_fraction(fps: float) -> Fraction:
    """25 -> 25/1, 29.97 -> 30000/1001: a rational rate the muxer accepts."""
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """H.264 mp4 written frame by frame, with an audio track muxed in on close.

    `container_format` is explicit because callers write to a temporary name whose
    suffix says nothing (see `atelier.core.atomic`).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        audio_source: str | Path | None = None,
        container_format: str = "mp4",
        codec: str = "libx264",
        options: dict[str, str] | None = None,
    ) -> None:
        import av

        self.path = Path(path)
        self.audio_source = audio_source
        # yuv420p needs even sizes; an odd edge is padded by one replicated pixel.
        self.width, self.height = width + width % 2, height + height % 2
        self.container = av.open(str(self.path), mode="w", format=container_format)
        self.stream = self.container.add_stream(codec, rate=fps_fraction(fps))
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        # veryfast/crf 18: near-transparent quality at about half the CPU of "fast"
        self.stream.options = (
            options if options is not None else {"preset": "veryfast", "crf": "18"}
        )
        self.frames = 0
        self.audio_stream = None
        if audio_source is not None:
            # Streams must all exist before the first packet is muxed (header time).
            with _open(audio_source) as src:
                if not src.streams.audio:
                    self.container.close()
                    raise AtelierError(f"{audio_source}: has no audio stream")
                a = src.streams.audio[0]
                self.audio_rate = a.rate or a.codec_context.sample_rate or 16000
                self.audio_layout = "mono" if (a.codec_context.channels or 1) == 1 else "stereo"
            self.audio_stream = self.container.add_stream("aac", rate=self.audio_rate)
            self.audio_stream.layout = self.audio_layout

    def write(self, bgr: np.ndarray) -> None:
        import av

        h, w = bgr.shape[:2]
        if (h, w) != (self.height, self.width):
            bgr = np.pad(bgr, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame.pts = self.frames
        self.frames += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def _mux_audio(self) -> None:
        """Re-encode the source's first audio stream to AAC at its own rate and layout."""
        import av

        out = self.audio_stream
        resampler = av.AudioResampler(format="fltp", layout=self.audio_layout, rate=self.audio_rate)
        pts = 0

        def encode(chunks: list) -> None:
            nonlocal pts
            for chunk in chunks:
                chunk.pts = pts
                pts += chunk.samples
                for packet in out.encode(chunk):
                    self.container.mux(packet)

        with _open(self.audio_source) as src:
            in_stream = src.streams.audio[0]
            try:
                for frame in src.decode(in_stream):
                    encode(resampler.resample(frame))
            except av.FFmpegError as e:
                raise AtelierError(f"{self.audio_source}: audio decoding failed ({e})") from e
            encode(resampler.resample(None))
            for packet in out.encode(None):
                self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        try:
            if self.audio_source is not None:
                self._mux_audio()
        finally:
            self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.container.close()


def describe(path: str | Path) -> dict[str, float]:
    """Frame count, fps and audio duration of a written file (for reports and tests)."""
    info: dict[str, float] = {"frames": 0, "fps": 0.0, "audio_seconds": 0.0}
    with _open(path) as c:
        if c.streams.video:
            v = c.streams.video[0]
            info["fps"] = float(v.average_rate or 0)
            info["frames"] = sum(1 for _ in c.demux(v) if _.size)
    with _open(path) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(a))
            info["audio_seconds"] = samples / float(a.rate)
    return info
