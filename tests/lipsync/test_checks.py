"""User mistakes found in trials (issue 10 items 9 and 22, and more): one line, exit 2, nothing
written, and fast -- library callers get the same checks as the CLI.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from atelier.cli.main import main
from atelier.core.errors import AtelierError
from atelier.lipsync.face_frames import _check_memory
from atelier.lipsync.hparams import load_hparams
from atelier.lipsync.infer import InferConfig, check_config
from atelier.lipsync.preprocess import PreprocessConfig, preprocess
from atelier.lipsync.synthetic import make_speech_wav, moving_face_frames


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from atelier.lipsync.models import Wav2Lip

    root = tmp_path_factory.mktemp("media")
    torch.manual_seed(0)
    ckpt = root / "wav2lip.pth"
    torch.save({"state_dict": Wav2Lip().state_dict()}, ckpt)
    face = root / "face.png"
    cv2.imwrite(str(face), moving_face_frames(1, 240, 180)[0])
    return {"ckpt": ckpt, "face": face, "audio": make_speech_wav(root / "s.wav", 0.4)}


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as e:  # usage errors leave through argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("atelier: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    assert time.perf_counter() - start < 60  # no hang (generous: a loaded 2-core CI)
    return err


@pytest.mark.parametrize(
    ("flag", "values"),
    [
        ("--fps", ["-5"]),
        ("--fps", ["0"]),
        ("--fps", ["nan"]),
        ("--face-det-batch-size", ["0"]),
        ("--wav2lip-batch-size", ["0"]),
        ("--resize-factor", ["0"]),
    ],
)
def test_infer_numeric_flags_fail_at_parse_time(
    flag: str, values: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["lipsync", "infer", "--checkpoint-path", "c.pth", "--face", "f.png",
            "--audio", "a.wav", "--outfile", str(tmp_path / "o.mp4"), flag, *values]  # fmt: skip
    one_line_exit_2(argv, capsys, flag)
    assert not list(tmp_path.iterdir())


def test_preprocess_batch_size_zero_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["lipsync", "preprocess", "--data-root", str(tmp_path), "--preprocessed-root",
            str(tmp_path / "out"), "--batch-size", "0"]  # fmt: skip
    one_line_exit_2(argv, capsys, "--batch-size")
    assert not (tmp_path / "out").exists()


def test_library_checks_name_the_parameter(tmp_path: Path) -> None:
    """The same mistakes through the Python API: no hang, no OOM, no ZeroDivisionError."""
    base = InferConfig(tmp_path / "c.pth", tmp_path / "f.png", tmp_path / "a.wav")
    for change, flag in [
        ({"fps": -5.0}, "--fps"),
        ({"fps": 0.0}, "--fps"),
        ({"fps": float("inf")}, "--fps"),
        ({"face_det_batch_size": 0}, "--face-det-batch-size"),
        ({"wav2lip_batch_size": 0}, "--wav2lip-batch-size"),
        ({"resize_factor": 0}, "--resize-factor"),
        ({"box": (10, -1, 5, 50)}, "--box"),
        ({"detector": "dlib"}, "--detector"),
        ({"detector": "s3fd"}, "--s3fd-path"),
        ({"detector": "s3fd", "s3fd_path": tmp_path / "s3fd.pth"}, "--s3fd-path"),
    ]:
        cfg = InferConfig(**{**base.__dict__, **change})
        with pytest.raises(AtelierError, match=flag):
            check_config(cfg)
    for change, flag in [({"batch_size": 0}, "--batch-size"), ({"workers": 0}, "--workers"),
                         ({"val_ratio": 1.5}, "--val-ratio")]:  # fmt: skip
        with pytest.raises(AtelierError, match=flag):
            preprocess(PreprocessConfig(tmp_path, tmp_path / "o", **change))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--resize-factor", "64"], "--resize-factor"),
        (["--crop", "100", "10", "100", "10"], "--crop"),
        (["--box", "10", "5000", "10", "50"], "--box"),  # outside the frame
        (["--box", "100", "10", "10", "50"], "--box"),  # inverted
        (["--pads", "-500", "-500", "-500", "-500"], "--pads"),
    ],
)
def test_infer_geometry_flags(
    media: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    flag: str,
) -> None:
    out = tmp_path / "results" / "o.mp4"  # not even its folder may appear
    argv = ["lipsync", "infer", "--checkpoint-path", str(media["ckpt"]), "--face",
            str(media["face"]), "--audio", str(media["audio"]), "--outfile", str(out),
            "--device", "cpu", *extra]  # fmt: skip
    one_line_exit_2(argv, capsys, flag)
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary


def test_infer_outfile_and_checkpoint_mistakes(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from atelier.lipsync.models import SyncNet_color

    common = ["lipsync", "infer", "--face", str(media["face"]), "--audio", str(media["audio"]),
              "--device", "cpu"]  # fmt: skip
    folder = tmp_path / "results"
    folder.mkdir()
    one_line_exit_2([*common, "--checkpoint-path", str(media["ckpt"]), "--outfile", str(folder)],
                    capsys, "--outfile", "is a folder")  # fmt: skip
    one_line_exit_2([*common, "--checkpoint-path", str(media["ckpt"]), "--outfile",
                     str(media["audio"])], capsys, "--outfile", "input")  # fmt: skip
    out = ["--outfile", str(tmp_path / "o.mp4")]
    one_line_exit_2([*common, "--checkpoint-path", str(tmp_path), *out], capsys, "is a folder")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    one_line_exit_2([*common, "--checkpoint-path", str(empty), *out], capsys, "empty file")
    wrong = tmp_path / "syncnet.pth"
    torch.save({"state_dict": SyncNet_color().state_dict()}, wrong)
    one_line_exit_2([*common, "--checkpoint-path", str(wrong), *out], capsys,
                    "not a Wav2Lip checkpoint")  # fmt: skip
    junk = tmp_path / "junk.pth"
    torch.save({"state_dict": {"a": 1, "b": "x"}}, junk)
    one_line_exit_2([*common, "--checkpoint-path", str(junk), *out], capsys, "junk.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["results", "empty.pth", "syncnet.pth", "junk.pth"]
    )


def test_train_and_preprocess_path_mistakes(
    lrs2_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for verb in ("train-syncnet", "train"):
        argv = ["lipsync", verb, "--data-root", str(lrs2_root), "--checkpoint-dir", str(a_file),
                "--syncnet-checkpoint-path", str(a_file)]  # fmt: skip
        if verb == "train-syncnet":
            argv = argv[:-2]
        one_line_exit_2(argv, capsys, "--checkpoint-dir", "is a file")
    argv = ["lipsync", "train-syncnet", "--data-root", str(lrs2_root), "--checkpoint-dir",
            str(tmp_path / "ck"), "--set", "img_size=64"]  # fmt: skip
    one_line_exit_2(argv, capsys, "--set", "img_size=64", "96")
    argv = ["lipsync", "preprocess", "--data-root", str(lrs2_root),
            "--preprocessed-root", str(a_file)]  # fmt: skip
    one_line_exit_2(argv, capsys, "--preprocessed-root", "is a file")
    assert a_file.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("img_size", "64", "built for img_size=96"),
        ("syncnet_T", "3", "built for syncnet_T=5"),
        ("batch_size", "0", "out of range"),
        ("batch_size", "1.5", "not a valid int"),
        ("syncnet_lr", "nan", "not a valid float"),
        ("initial_learning_rate", "0", "out of range"),
        ("preemphasize", "maybe", "not a valid bool"),
        ("fmax", "9000", "fmax"),
        ("stft_pad_mode", "mirror", "stft_pad_mode"),
    ],
)
def test_hparams_overrides_are_checked(key: str, value: str, why: str) -> None:
    with pytest.raises(AtelierError, match=why):
        load_hparams(None, "--set", **{key: value})


def test_hparams_yaml_types_are_strict(tmp_path: Path) -> None:
    bad = tmp_path / "hp.yaml"
    bad.write_text("batch_size: true\n")  # YAML true is not the number 1
    with pytest.raises(AtelierError, match="batch_size=True"):
        load_hparams(bad)
    bad.write_text("eval_interval: 2.5\n")
    with pytest.raises(AtelierError, match="eval_interval"):
        load_hparams(bad)
    with pytest.raises(AtelierError, match="--hparams"):
        load_hparams(tmp_path / "missing.yaml")
    bad.write_bytes(b"\xfe\xff\x00binary")  # found by the sweep: a traceback before
    with pytest.raises(AtelierError, match="not a UTF-8 text"):
        load_hparams(bad)
    bad.write_text("- a\n- list\n")
    with pytest.raises(AtelierError, match="mapping"):
        load_hparams(bad)


def test_huge_frames_are_refused_before_memory_runs_out() -> None:
    frame = np.zeros((2160, 3840, 3), np.uint8)  # one 4K frame; a million of them cannot fit
    with pytest.raises(AtelierError, match="--resize-factor"):
        _check_memory(frame, 1_000_000, Path("4k.mp4"))
    _check_memory(frame, 2, Path("4k.mp4"))  # two fit anywhere
