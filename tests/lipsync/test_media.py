"""Audio of any container, codec, rate and channel count; bad audio is one clear error.

Issue 10 item 7: every MP3 failed at mux time ("... .o.mp4.xxxx.partial returned 22"),
blaming the input while writing the output. Each case below encodes the same voice-like
signal with PyAV into a real file, decodes it, and muxes it into an mp4 with video.
"""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from atelier.core.errors import AtelierError
from atelier.lipsync.media import VideoWriter, decode_audio, describe, read_audio
from atelier.lipsync.synthetic import make_face_video, speech_like

SECONDS = 0.6
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def encode(path: Path, fmt: str, codec: str, rate: int, channels: int) -> Path:
    """`SECONDS` of speech-like audio encoded by PyAV/FFmpeg, as any other tool would."""
    layout = LAYOUTS[channels]
    wav = np.tile(speech_like(SECONDS, rate), (channels, 1)).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(wav, format="fltp", layout=layout)
        frame.sample_rate = rate
        to_codec = av.AudioResampler(stream.codec_context.format.name, layout, rate)
        pts = 0
        for chunk in [*to_codec.resample(frame), *to_codec.resample(None)]:
            chunk.pts, chunk.time_base = pts, Fraction(1, rate)
            pts += chunk.samples
            for packet in stream.encode(chunk):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return path


CASES = [
    ("mp3", "mp3", "libmp3lame", 16000, 1),
    ("mp3", "mp3", "libmp3lame", 22050, 2),
    ("mp3", "mp3", "libmp3lame", 44100, 2),
    ("mp3", "mp3", "libmp3lame", 48000, 2),
    ("m4a", "ipod", "aac", 8000, 1),
    ("m4a", "ipod", "aac", 44100, 6),
    ("opus", "ogg", "libopus", 48000, 2),
    ("flac", "flac", "flac", 96000, 1),
    ("wav", "wav", "pcm_s16le", 12345, 6),  # a rate AAC does not take: resampled up
    ("wav", "wav", "pcm_u8", 8000, 1),
]


@pytest.mark.parametrize(("ext", "fmt", "codec", "rate", "channels"), CASES)
def test_any_audio_decodes_and_muxes(
    tmp_path: Path, ext: str, fmt: str, codec: str, rate: int, channels: int
) -> None:
    src = encode(tmp_path / f"voice.{ext}", fmt, codec, rate, channels)
    audio = decode_audio(src)
    assert audio.samples.shape[0] == min(channels, 2) and audio.rate == (
        48000 if codec == "libopus" else rate
    )
    assert audio.seconds == pytest.approx(SECONDS, abs=0.08)
    mono16k = read_audio(src, 16000)
    assert mono16k.size / 16000 == pytest.approx(SECONDS, abs=0.08)
    assert np.abs(mono16k).max() > 0.1  # the voice survived, not silence
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, 64, 48, audio_source=src) as w:
        for _ in range(15):
            w.write(np.zeros((48, 64, 3), np.uint8))
    info = describe(out)
    assert info["frames"] == 15 and info["audio_seconds"] == pytest.approx(SECONDS, abs=0.1)


def test_audio_track_of_a_video(tmp_path: Path) -> None:
    video = make_face_video(tmp_path / "talk.mp4", 0.6, 25, 96, 64)
    assert decode_audio(video).seconds == pytest.approx(0.6, abs=0.08)


def test_bad_audio_is_one_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    with pytest.raises(AtelierError, match=r"empty\.wav"):
        decode_audio(empty)
    silent_video = make_face_video(tmp_path / "mute.mp4", 0.2, 25, 64, 48, with_audio=False)
    with pytest.raises(AtelierError, match="has no audio stream"):
        decode_audio(silent_video)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00" * 5000)
    with pytest.raises(AtelierError, match=r"junk\.mp3"):
        decode_audio(junk)
    nan = tmp_path / "nan.wav"
    encode(nan, "wav", "pcm_f32le", 16000, 1)
    raw = bytearray(nan.read_bytes())
    raw[-400:] = np.full(100, np.nan, "<f4").tobytes()
    nan.write_bytes(bytes(raw))
    with pytest.raises(AtelierError, match="NaN"):
        decode_audio(nan)


def test_corrupt_mp3_middle_still_decodes(tmp_path: Path) -> None:
    """A damaged stretch of an mp3 is skipped (as ffmpeg does), never a traceback."""
    src = encode(tmp_path / "v.mp3", "mp3", "libmp3lame", 44100, 2)
    raw = bytearray(src.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 600] = np.random.default_rng(0).integers(0, 256, 600, np.uint8).tobytes()
    src.write_bytes(bytes(raw))
    try:
        audio = decode_audio(src)
    except AtelierError as e:
        assert "v.mp3" in str(e)
    else:
        assert 0.3 < audio.seconds < SECONDS + 0.1


def test_frames_the_encoder_refuses_are_one_line(tmp_path: Path) -> None:
    """A 20000 px wide frame is beyond H.264's limits: said in one line, not an FFmpeg trace."""
    with (
        pytest.raises(AtelierError, match=r"20000x64 video failed.*--resize-factor"),
        VideoWriter(tmp_path / "wide.mp4", 25, 20000, 64) as w,
    ):
        w.write(np.zeros((64, 20000, 3), np.uint8))
