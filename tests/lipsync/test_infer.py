"""Inference end to end: an mp4 with the right frame count, fps and audio duration."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch

from atelier.core.errors import AtelierError
from atelier.lipsync.audio import mel_chunks, melspectrogram
from atelier.lipsync.hparams import load_hparams
from atelier.lipsync.infer import InferConfig, infer
from atelier.lipsync.media import describe, read_audio
from atelier.lipsync.models import Wav2Lip
from atelier.lipsync.synthetic import make_face_video, make_speech_wav, moving_face_frames


@pytest.fixture(scope="module")
def w2l_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "wav2lip.pth"
    state = {"state_dict": Wav2Lip().state_dict(), "optimizer": None}
    torch.save({**state, "global_step": 0, "global_epoch": 0}, path)
    return path


def expected_frames(audio: Path, fps: float) -> int:
    hp = load_hparams()
    return len(mel_chunks(melspectrogram(read_audio(audio, 16000), hp), fps, hp))


def test_infer_video_with_missing_faces(w2l_ckpt: Path, tmp_path: Path) -> None:
    video = make_face_video(tmp_path / "face.mp4", 1.2, 25, 240, 180, no_face=[3, 4])
    speech = make_speech_wav(tmp_path / "speech.wav", 0.7)
    out = tmp_path / "out" / "result.mp4"
    cfg = InferConfig(w2l_ckpt, video, speech, out, wav2lip_batch_size=8, device="cpu")
    result = infer(cfg)
    assert {3, 4} <= set(result.interpolated)
    info = describe(out)
    assert info["frames"] == result.frames == expected_frames(speech, 25.0)
    assert info["fps"] == pytest.approx(25.0)
    assert info["audio_seconds"] == pytest.approx(0.7, abs=0.1)
    assert not list(out.parent.glob(".*partial"))  # the temporary name is gone


def test_infer_still_image_uses_fps_flag(w2l_ckpt: Path, tmp_path: Path) -> None:
    img = tmp_path / "face.jpg"
    cv2.imwrite(str(img), moving_face_frames(1, 240, 180)[0])
    speech = make_speech_wav(tmp_path / "speech.wav", 0.4)
    out = tmp_path / "still.mp4"
    result = infer(InferConfig(w2l_ckpt, img, speech, out, fps=20.0, device="cpu"))
    info = describe(out)
    assert info["frames"] == result.frames == expected_frames(speech, 20.0)
    assert info["fps"] == pytest.approx(20.0)


def test_infer_clear_errors(w2l_ckpt: Path, tmp_path: Path) -> None:
    video = make_face_video(tmp_path / "v.mp4", 0.4, 25, 160, 120, with_audio=False)
    speech = make_speech_wav(tmp_path / "s.wav", 0.5)
    with pytest.raises(AtelierError, match="checkpoint not found"):
        infer(InferConfig(tmp_path / "nope.pth", video, speech, tmp_path / "o.mp4"))
    short = make_speech_wav(tmp_path / "short.wav", 0.1)
    with pytest.raises(AtelierError, match="shorter than one"):
        infer(InferConfig(w2l_ckpt, video, short, tmp_path / "o.mp4", device="cpu"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(AtelierError, match=r"junk\.mp4"):
        infer(InferConfig(w2l_ckpt, junk, speech, tmp_path / "o.mp4", device="cpu"))
    blank = make_face_video(tmp_path / "b.mp4", 0.4, 25, 160, 120, False, no_face=range(10))
    with pytest.raises(AtelierError, match="no face detected"):
        infer(InferConfig(w2l_ckpt, blank, speech, tmp_path / "o.mp4", device="cpu"))
    assert not (tmp_path / "o.mp4").exists()


def test_inference_optimisation_keeps_outputs() -> None:
    from atelier.lipsync.infer import optimize_for_inference

    torch.manual_seed(0)
    model = Wav2Lip().eval()
    for p in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(p, torch.nn.BatchNorm2d):
            p.running_mean.uniform_(-0.1, 0.1)
            p.running_var.uniform_(0.5, 2.0)
    fast = optimize_for_inference(model)
    x, a = torch.rand(2, 6, 96, 96), torch.randn(2, 1, 80, 16)
    with torch.no_grad():
        assert torch.allclose(model(a, x), fast(a, x), atol=1e-4)


def test_resize_rotate_crop_follow_official_order(tmp_path: Path) -> None:
    import numpy as np

    from atelier.lipsync.face_frames import _prepare

    frame = np.zeros((120, 200, 3), np.uint8)
    cfg = InferConfig(tmp_path / "c.pth", tmp_path / "f.mp4", tmp_path / "a.wav",
                      resize_factor=2, rotate=True, crop=(10, -1, 5, 40))  # fmt: skip
    # resize 200x120 -> 100x60, rotate -> 60 wide x 100 high, then crop rows 10: and cols 5:40
    assert _prepare(frame, cfg).shape == (90, 35, 3)


def test_infer_reads_compressed_audio_without_ffmpeg(w2l_ckpt: Path, tmp_path: Path) -> None:
    """An .m4a (AAC) voice track, decoded and re-muxed by PyAV alone."""
    import av
    import numpy as np

    from atelier.lipsync.synthetic import speech_like

    m4a = tmp_path / "speech.m4a"
    wav = speech_like(0.5)
    with av.open(str(m4a), "w", format="ipod") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wav[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*s.encode(frame), *s.encode(None)]:
            c.mux(packet)
    assert abs(read_audio(m4a, 16000).size / 16000 - 0.5) < 0.1
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), moving_face_frames(1, 240, 180)[0])
    out = tmp_path / "from_m4a.mp4"
    result = infer(InferConfig(w2l_ckpt, img, m4a, out, device="cpu"))
    info = describe(out)
    assert info["frames"] == result.frames and np.isclose(info["audio_seconds"], 0.5, atol=0.1)


def test_readme_example_with_an_mp3_through_the_cli(w2l_ckpt: Path, tmp_path: Path) -> None:
    """Issue 10 item 7: `lipsync infer --audio speech.mp3` failed for every MP3."""
    from atelier.cli.main import main
    from tests.lipsync.test_media import encode

    mp3 = encode(tmp_path / "speech.mp3", "mp3", "libmp3lame", 44100, 2)
    face = make_face_video(tmp_path / "one_frame.mp4", 0.04, 25, 160, 120, with_audio=False)
    out = tmp_path / "result.mp4"
    argv = ["lipsync", "infer", "--checkpoint-path", str(w2l_ckpt), "--face", str(face),
            "--audio", str(mp3), "--outfile", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0  # a 1-frame video is looped over the whole audio, as officially
    info = describe(out)
    assert info["frames"] == expected_frames(mp3, 25.0)
    assert info["audio_seconds"] == pytest.approx(0.6, abs=0.1)


@pytest.mark.parametrize("kind", ["gray16.png", "rgba.png", "gray.jpg", "face.tiff", "face.gif"])
def test_odd_image_formats_become_bgr_frames(tmp_path: Path, kind: str) -> None:
    import numpy as np

    from atelier.lipsync.infer import first_frame

    bgr = moving_face_frames(1, 96, 64)[0]
    path = tmp_path / kind
    if kind == "gray16.png":
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    elif kind == "rgba.png":
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    elif kind == "gray.jpg":
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    else:
        img = bgr
    if kind.endswith(".gif"):
        import av

        with av.open(str(path), "w", format="gif") as c:
            s = c.add_stream("gif", rate=10)
            s.width, s.height, s.pix_fmt = 96, 64, "rgb8"
            frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
            for packet in [*s.encode(frame), *s.encode(None)]:
                c.mux(packet)
    else:
        assert cv2.imwrite(str(path), img)
    frame = first_frame(path)
    assert frame.dtype == np.uint8 and frame.shape == (64, 96, 3)


def test_truncated_video_is_a_clear_error_or_its_frames(w2l_ckpt: Path, tmp_path: Path) -> None:
    video = make_face_video(tmp_path / "v.mp4", 0.8, 25, 160, 120, with_audio=False)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    speech = make_speech_wav(tmp_path / "s.wav", 0.3)
    try:
        infer(InferConfig(w2l_ckpt, cut, speech, tmp_path / "o.mp4", device="cpu"))
    except AtelierError as e:
        assert "cut.mp4" in str(e)
    else:
        assert describe(tmp_path / "o.mp4")["frames"] > 0
