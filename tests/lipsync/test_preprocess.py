"""preprocess: unusable videos stay out of the filelists; kills and racing leftovers are safe.

Issue 10 item 10 (a face-less video entered train.txt and train-syncnet died after 2000
tries) and item 6 (orphaned workers kept renaming after kill -9; the rerun hit
FileExistsError).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atelier.cli.main import main
from atelier.lipsync.dataset import unusable_reason
from atelier.lipsync.preprocess import PreprocessConfig, _job, preprocess
from atelier.lipsync.synthetic import make_face_video


def test_unusable_reason_matches_what_the_trainers_need() -> None:
    assert unusable_reason([], 5) == "no face found in any frame"
    assert "only 15" in unusable_reason(list(range(15)), 5)
    assert "consecutive" in unusable_reason(list(range(0, 40, 2)), 5)
    assert unusable_reason(list(range(16)), 5) is None


def test_faceless_video_left_out_of_filelists_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "main"
    make_face_video(root / "spk1" / "good.mp4", 0.8, 25, 160, 120)
    make_face_video(root / "spk2" / "blank.mp4", 0.4, 25, 160, 120, no_face=range(10))
    out = tmp_path / "pre"
    argv = ["lipsync", "preprocess", "--data-root", str(root), "--preprocessed-root", str(out),
            "--make-filelists", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "spk2/blank: left out of the filelists (no face found in any frame)" in printed
    listed = (out / "filelists" / "train.txt").read_text().split()
    listed += (out / "filelists" / "val.txt").read_text().split()
    assert set(listed) == {"spk1/good"}
    report = {r["name"]: r for r in json.loads((out / "preprocess_report.json").read_text())}
    assert report["spk2/blank"]["unusable"] == "no face found in any frame"
    assert report["spk1/good"]["unusable"] is None


def test_no_trainable_video_is_an_error_not_empty_filelists(tmp_path: Path) -> None:
    from atelier.core.errors import AtelierError

    root = tmp_path / "main"
    make_face_video(root / "spk" / "blank.mp4", 0.3, 25, 96, 64, no_face=range(8))
    with pytest.raises(AtelierError, match="none of the 1 video"):
        preprocess(PreprocessConfig(root, tmp_path / "pre", make_filelists=True, device="cpu"))
    assert not (tmp_path / "pre" / "filelists").exists()


def test_a_racing_leftover_does_not_crash_the_rerun(lrs2_root: Path, tmp_path: Path) -> None:
    """Another process finished the same video folder while we worked on it."""
    video = sorted(lrs2_root.glob("*/*.mp4"))[0]
    out_dir = tmp_path / video.parent.name / video.stem
    cfg = PreprocessConfig(lrs2_root, tmp_path, device="cpu")
    first = _job((video, out_dir, cfg))
    assert first.error is None and (out_dir / "audio.wav").is_file()
    before = sorted(p.name for p in out_dir.iterdir())
    again = _job((video, out_dir, cfg))  # its rename now finds the folder in place
    assert again.error is None and again.skipped and again.frames == first.frames
    assert sorted(p.name for p in out_dir.iterdir()) == before
    assert not list(out_dir.parent.glob(".*partial"))


def _children(pid: int) -> list[int]:
    kids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                ln.split(":\t", 1) for ln in status.read_text().splitlines() if ":\t" in ln
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            kids.append(int(status.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_leaves_no_worker_and_the_rerun_completes(tmp_path: Path) -> None:
    root = tmp_path / "main"
    for i in range(3):
        make_face_video(root / f"spk{i}" / "v.mp4", 0.8, 25, 160, 120)
    out = tmp_path / "pre"
    cmd = [sys.executable, "-m", "atelier.cli.main", "lipsync", "preprocess", "--data-root",
           str(root), "--preprocessed-root", str(out), "--workers", "2"]  # fmt: skip
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and parent.poll() is None:
        workers = [k for k in _children(parent.pid) if "spawn_main" in _cmdline(k)]
        if len(workers) >= 2:
            break
        time.sleep(0.2)
    if parent.poll() is not None:
        pytest.fail("preprocess ended before its workers could be seen")
    assert workers, "no worker process appeared"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "workers outlived their killed parent"
    rerun = subprocess.run([*cmd[:-1], "1"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert all((out / f"spk{i}" / "v" / "audio.wav").is_file() for i in range(3))
    assert not list(out.glob("*/.*.partial"))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
