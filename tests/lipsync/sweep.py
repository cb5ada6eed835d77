"""Hostile-input sweep of `atelier lipsync`: the totals recorded in docs/reliability.md.

Each case is a fresh `python -m atelier.cli.main lipsync ...`. Clean means exit 0 where the
input is valid, else exit 2 with exactly one `atelier: error:` line; never a traceback. Slow
(one process per case, tens of minutes on 2 busy cores): a record for the next sweep to be
compared with, not a test (the regression tests are tests/lipsync/test_*.py).

    PYTHONPATH=src python -m tests.lipsync.sweep [--workdir DIR] [--media DIR_OF_REAL_CLIPS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import cv2
import torch

from atelier.lipsync.models import SyncNet_color, Wav2Lip
from atelier.lipsync.synthetic import make_face_video, make_speech_wav, moving_face_frames
from tests.lipsync.test_media import encode

AUDIO = [
    *[("mp3", "mp3", "libmp3lame", r, 2) for r in (16000, 22050, 44100, 48000)],
    ("m4a", "ipod", "aac", 8000, 1),
    ("opus", "ogg", "libopus", 48000, 2),
    ("flac", "flac", "flac", 96000, 1),
    ("wav", "wav", "pcm_s16le", 12345, 6),
]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_inputs(w: Path) -> dict[str, Path]:
    """Every file the cases use, made on the spot (real clips come from --media)."""
    torch.manual_seed(0)
    f = {"ckpt": w / "w2l.pth", "syncnet": w / "sn.pth", "face": w / "face.png"}
    torch.save({"state_dict": Wav2Lip().state_dict()}, f["ckpt"])
    torch.save({"state_dict": SyncNet_color().state_dict()}, f["syncnet"])
    cv2.imwrite(str(f["face"]), moving_face_frames(1, 240, 180)[0])
    f["video"] = make_face_video(w / "v.mp4", 0.6, 25, 160, 120)
    f["one"] = make_face_video(w / "one.mp4", 0.04, 25, 160, 120, with_audio=False)
    f["mute"] = make_face_video(w / "mute.mp4", 0.3, 25, 160, 120, with_audio=False)
    f["blank"] = make_face_video(w / "blank.mp4", 0.3, 25, 160, 120, no_face=range(8))
    f["wav"] = make_speech_wav(w / "s.wav", 0.5)
    f["short"] = make_speech_wav(w / "short.wav", 0.1)
    f["empty"] = w / "empty.wav"
    with wave.open(str(f["empty"]), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
    f["cut"] = write(w / "cut.mp4", f["video"].read_bytes()[: f["video"].stat().st_size // 3])
    f["junk"] = write(w / "junk.mp4", os.urandom(4000))
    f["text"] = write(w / "notimg.png", b"hello")
    f["zero"] = write(w / "zero.pth", b"")
    f["file"] = write(w / "afile", b"x")
    for ext, fmt, codec, rate, ch in AUDIO:
        f[f"{codec}{rate}"] = encode(w / f"a_{codec}{rate}.{ext}", fmt, codec, rate, ch)
    lrs = w / "lrs" / "main"
    make_face_video(lrs / "s" / "a.mp4", 0.8, 25, 160, 120)
    make_face_video(lrs / "s" / "b.mp4", 0.3, 25, 160, 120, no_face=range(8))
    f["lrs"] = lrs
    return f


def make_cases(w: Path, f: dict[str, Path], media: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (argv, expected exit: 0 works, 2 one-line error, -1 either)."""

    def infer(face: Path = f["face"], audio: Path = f["wav"], *extra: str, out: Path | None = None):
        return ["lipsync", "infer", "--checkpoint-path", str(f["ckpt"]), "--device", "cpu",
                "--face", str(face), "--audio", str(audio), "--outfile", str(out or w / "o.mp4"),
                *extra]  # fmt: skip

    c: dict[str, tuple[list[str], int]] = {}
    for _, _, codec, rate, _ in AUDIO:
        c[f"audio {codec} {rate} Hz"] = (infer(f["face"], f[f"{codec}{rate}"]), 0)
    for name in ("1.mp3", "2.wav"):
        if (media / name).is_file():
            c[f"real audio {name}"] = (infer(f["face"], media / name), 0)
    for name in ("1.mp4", "2.avi"):
        if (media / name).is_file():
            c[f"real video {name} as --face"] = (infer(media / name), 0)
    c["a video's audio track"] = (infer(f["face"], f["video"]), 0)
    c["1-frame video"] = (infer(f["one"]), 0)
    for flag, value in [("--fps", "-5"), ("--fps", "0"), ("--fps", "nan"), ("--fps", "1e9"),
                        ("--face-det-batch-size", "0"), ("--wav2lip-batch-size", "0"),
                        ("--resize-factor", "1000"), ("--resize-factor", "0"),
                        ("--resize-factor", "64")]:  # fmt: skip
        c[f"{flag} {value}"] = (infer(f["face"], f["wav"], flag, value), 2)
    for name, extra, want in [
        ("--crop 100 10 100 10", ["--crop", "100", "10", "100", "10"], 2),
        ("--box outside", ["--box", "10", "5000", "10", "50"], 2),
        ("--box inverted", ["--box", "100", "10", "50", "10"], 2),
        ("--box partly -1", ["--box", "10", "-1", "10", "50"], 2),
        ("--pads -500 x4", ["--pads", "-500", "-500", "-500", "-500"], 2),
        ("--pads 4000 x4 (clipped)", ["--pads", "4000", "4000", "4000", "4000"], 0),
        ("--detector s3fd, no weights", ["--detector", "s3fd"], 2),
        ("--detector opencv", ["--detector", "opencv"], 0),
        ("--detector mtcnn", ["--detector", "mtcnn"], 0),
    ]:
        c[name] = (infer(f["face"], f["wav"], *extra), want)
    c["--outfile a folder"] = (infer(out=w), 2)
    c["--outfile = --audio"] = (infer(out=f["wav"]), 2)
    c["--outfile under a file"] = (infer(out=f["file"] / "o.mp4"), 2)
    c["--outfile .mkv"] = (infer(out=w / "o.mkv"), 0)
    c["--outfile .avi"] = (infer(out=w / "o.avi"), 0)
    for name, face, audio in [
        ("video without audio as --audio", f["face"], f["mute"]),
        ("zero-length wav", f["face"], f["empty"]),
        ("audio shorter than a window", f["face"], f["short"]),
        ("random bytes .mp4 as --face", f["junk"], f["wav"]),
        ("text file as .png --face", f["text"], f["wav"]),
        ("face video with no face", f["blank"], f["wav"]),
        ("missing --face", w / "nope.mp4", f["wav"]),
        ("missing --audio", f["face"], w / "nope.wav"),
    ]:
        c[name] = (infer(face, audio), 2)
    c["truncated mp4 as --face"] = (infer(f["cut"]), -1)
    for name, path in [("a folder", w), ("empty", f["zero"]), ("a SyncNet", f["syncnet"]),
                       ("random bytes", f["junk"]), ("missing", w / "no.pth")]:  # fmt: skip
        c[f"--checkpoint-path {name}"] = ([*infer(), "--checkpoint-path", str(path)], 2)

    pre = ["lipsync", "preprocess", "--data-root", str(f["lrs"]), "--preprocessed-root"]
    c["preprocess --preprocessed-root a file"] = ([*pre, str(f["file"])], 2)
    for flag, value in [("--batch-size", "0"), ("--workers", "-1"), ("--val-ratio", "1.5")]:
        c[f"preprocess {flag} {value}"] = ([*pre, str(w / "p0"), flag, value], 2)
    c["preprocess --data-root a file"] = (
        ["lipsync", "preprocess", "--data-root", str(f["file"]), "--preprocessed-root", "p"],
        2,
    )
    c["preprocess, face-less video left out"] = ([*pre, str(w / "pre"), "--make-filelists"], 0)

    tr = ["lipsync", "train-syncnet", "--data-root", str(w / "pre"), "--checkpoint-dir"]
    c["train-syncnet --checkpoint-dir a file"] = ([*tr, str(f["file"])], 2)
    for extra in (["--set", "img_size=64"], ["--set", "batch_size=0"],
                  ["--set", "syncnet_lr=nan"], ["--set", "preemphasize=maybe"],
                  ["--set", "nokey=1"], ["--set", "noequals"], ["--lr", "nan"], ["--lr", "1e30"],
                  ["--workers", "-1"], ["--hparams", str(w / "no.yaml")],
                  ["--hparams", str(f["junk"])],
                  ["--checkpoint-path", str(f["junk"])]):  # fmt: skip
        c[f"train-syncnet {' '.join(extra).replace(str(w), '.')}"] = (
            [*tr, str(w / "ck"), *extra],
            2,
        )
    c["train-syncnet, no filelists"] = (
        ["lipsync", "train-syncnet", "--data-root", str(w), "--checkpoint-dir", str(w / "ck3")],
        2,
    )
    train = ["lipsync", "train", "--data-root", str(w / "pre"), "--checkpoint-dir"]
    c["train --checkpoint-dir a file"] = (
        [*train, str(f["file"]), "--syncnet-checkpoint-path", str(f["syncnet"])],
        2,
    )
    c["train --syncnet-checkpoint-path a Wav2Lip"] = (
        [*train, str(w / "ck2"), "--syncnet-checkpoint-path", str(f["ckpt"]), "--device", "cpu"],
        2,
    )
    return c


def clean(run: subprocess.CompletedProcess[str], want: int) -> bool:
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("atelier: error")]
    one_line = run.returncode == 2 and len(errors) == 1
    if "Traceback" in run.stderr:
        return False
    return {0: run.returncode == 0, 2: one_line}.get(want, run.returncode == 0 or one_line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lipsync-sweep"))
    ap.add_argument("--media", type=Path, default=Path("../shared/data/media"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cases = make_cases(args.workdir, make_inputs(args.workdir), args.media)
    failures = []
    for name, (argv, want) in cases.items():
        start = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "atelier.cli.main", *argv],
                             capture_output=True, text=True, timeout=900)  # fmt: skip
        ok = clean(run, want)
        last = (run.stderr.strip() or run.stdout.strip()).splitlines()[-1:]
        print(f"{'ok ' if ok else 'BAD'} rc={run.returncode} {time.monotonic() - start:5.1f}s "
              f"{name}: {last[0] if last else ''}", flush=True)  # fmt: skip
        if not ok:
            failures.append(name)
            print(run.stderr[-1500:], flush=True)
    tried = len(cases)
    print(json.dumps({"tried": tried, "clean": tried - len(failures), "failures": failures}))


if __name__ == "__main__":
    main()
