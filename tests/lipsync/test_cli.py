"""`atelier lipsync ...`: flags reach the suite; user mistakes are one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.cli.main import main


def test_cli_preprocess_resume_and_train_syncnet(
    lrs2_root: Path, preprocessed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lipsync", "preprocess", "--data_root", str(lrs2_root),
                 "--preprocessed-root", str(preprocessed)]) == 0  # fmt: skip
    assert "2 from an earlier run" in capsys.readouterr().out
    hp = tmp_path / "hp.yaml"
    hp.write_text("syncnet_eval_steps: 0\nnum_workers: 0\n")
    argv = ["lipsync", "train-syncnet", "--data-root", str(preprocessed),
            "--checkpoint_dir", str(tmp_path / "ck"), "--hparams", str(hp), "--batch-size", "2",
            "--set", "syncnet_eval_interval=1", "--max-steps", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "step 1 " in out and "checkpoint_step000000001.pth" in out


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    face = tmp_path / "f.jpg"
    face.write_bytes(b"x")
    code = main(["lipsync", "infer", "--checkpoint_path", str(tmp_path / "missing.pth"),
                 "--face", str(face), "--audio", str(face)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("atelier: error:") and err.count("\n") == 1
    code = main(["lipsync", "train-syncnet", "--data-root", str(tmp_path), "--checkpoint-dir",
                 str(tmp_path / "ck"), "--set", "no_such_key=1"])  # fmt: skip
    assert code == 2 and "no_such_key" in capsys.readouterr().err
