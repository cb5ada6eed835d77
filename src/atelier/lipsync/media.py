"""Video and audio through PyAV, which bundles its own ffmpeg: no ffmpeg binary needed.

Frames are handed around as BGR uint8 arrays (H, W, 3), the layout the official
code gets from OpenCV, so crops and saved JPEGs match it. Every decode error becomes
an `AtelierError` naming the file.
"""

from __future__ import annotations

import dataclasses
import wave
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger

if TYPE_CHECKING:
    import av

log = get_logger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# What FFmpeg's native AAC encoder accepts; any other rate is resampled to the next one up.
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200)
AAC_RATES += (96000,)


def aac_rate(rate: int) -> int:
    return next((r for r in AAC_RATES if r >= rate), AAC_RATES[-1])


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


@dataclasses.dataclass
class Audio:
    """Decoded audio at its own rate: (channels, samples) float32, 1 or 2 channels."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.rate

    def mono(self) -> np.ndarray:
        return self.samples.mean(axis=0)


def decode_audio(path: str | Path) -> Audio:
    """The first audio stream of any file PyAV reads (mp3, aac/m4a, ogg/opus, flac, wav...,
    or a video's audio track), at its own rate, down-mixed to stereo when it has more.

    Decoding is done here, before any output is opened, so a bad input is named as such
    (it once failed while muxing and blamed the output's temporary file). A corrupt packet
    is skipped with a warning, as ffmpeg does; a stream whose format or rate changes
    midway is converted to its first format.
    """
    import av

    chunks: list[np.ndarray] = []
    bad = 0
    resampler = None
    source: tuple[str, str, int] | None = None
    layout, rate = "mono", 0
    with _open(path) as container:
        if not container.streams.audio:
            raise AtelierError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    bad += 1
                    continue
                for frame in frames:
                    key = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if resampler is None:
                        rate = frame.sample_rate
                        layout = "mono" if len(frame.layout.channels) == 1 else "stereo"
                    if key != source:
                        if resampler is not None:
                            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
                        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
                        source = key
                    frame.pts = None  # timestamps are not needed, and may be broken
                    chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            if resampler is not None:
                chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        except (av.FFmpegError, ValueError) as e:
            raise AtelierError(f"{path}: audio decoding failed ({e})") from e
    if bad:
        log.warning("%s: %d corrupt audio packet(s) skipped", path, bad)
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise AtelierError(f"{path}: the audio stream holds no samples")
    samples = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise AtelierError(f"{path}: the audio holds NaN or infinite samples")
    return Audio(samples, rate)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at `sample_rate` from any audio or video file.

    Channels are averaged and the rate converted with librosa (soxr), which is what
    `librosa.load(path, sr=...)` in the official code does.
    """
    return resample_mono(decode_audio(path), sample_rate)


def resample_mono(audio: Audio, sample_rate: int) -> np.ndarray:
    wav = audio.mono()
    if audio.rate != sample_rate:
        import librosa

        wav = librosa.resample(wav, orig_sr=audio.rate, target_sr=sample_rate)
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
        audio_source: str | Path | Audio | None = None,
        container_format: str = "mp4",
        codec: str = "libx264",
        options: dict[str, str] | None = None,
    ) -> None:
        import av

        self.path = Path(path)
        # Decoded before the output is opened: an audio error names the audio file.
        self.audio = (
            decode_audio(audio_source)
            if audio_source is not None and not isinstance(audio_source, Audio)
            else audio_source
        )
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
        if self.audio is not None:
            # Streams must all exist before the first packet is muxed (header time).
            self.audio_rate = aac_rate(self.audio.rate)
            self.audio_layout = "mono" if self.audio.samples.shape[0] == 1 else "stereo"
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
        self._encode(frame)

    def _encode(self, frame: av.VideoFrame | None) -> None:
        """One frame (None: flush) through the video encoder, its errors said in one line."""
        import av

        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except av.FFmpegError as e:
            if isinstance(e, OSError) and e.errno not in (None, 0) and e.errno < 1000:
                raise  # a real OS error (disk full...): the CLI words those
            raise AtelierError(
                f"encoding {self.width}x{self.height} video failed ({e}); "
                "use --resize-factor or --crop for very large frames"
            ) from e

    def _mux_audio(self) -> None:
        """Encode the decoded samples to AAC, timestamps counted in samples at the output rate."""
        import av

        assert self.audio is not None and self.audio_stream is not None
        out, samples = self.audio_stream, self.audio.samples
        resampler = av.AudioResampler(format="fltp", layout=self.audio_layout, rate=self.audio_rate)
        pts = 0

        def encode(chunks: list[av.AudioFrame]) -> None:
            nonlocal pts
            for chunk in chunks:
                chunk.pts, chunk.time_base = pts, Fraction(1, self.audio_rate)
                pts += chunk.samples
                for packet in out.encode(chunk):
                    self.container.mux(packet)

        step = 1 << 14
        for i in range(0, samples.shape[1], step):
            part = np.ascontiguousarray(samples[:, i : i + step])
            frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=self.audio_layout)
            frame.sample_rate = self.audio.rate
            encode(resampler.resample(frame))
        encode(resampler.resample(None))
        for packet in out.encode(None):
            self.container.mux(packet)

    def close(self) -> None:
        self._encode(None)
        try:
            if self.audio is not None:
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
