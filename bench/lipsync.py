"""lipsync benchmark: end-to-end inference fps, Atelier vs the official method; training steps/s.

A 720p clip of a moving real face with a voice track is made on the spot; both paths run
the same random-weight Wav2Lip checkpoint on the same device, one run each.

The "official method" is re-implemented here step for step from Rudrabha/Wav2Lip
inference.py: every frame read into memory with cv2.VideoCapture, audio loaded with
librosa, face detection on every full-resolution frame in batches of
--face-det-batch-size (16), Wav2Lip in batches of 128, frames written to a temporary
DIVX AVI with cv2.VideoWriter, then a second encode muxing the audio into the mp4
(`ffmpeg -y -i audio -i avi -strict -2 -q:v 1 out.mp4` when an ffmpeg binary exists;
otherwise the same transcode, libx264 at ffmpeg's defaults + AAC, through PyAV). Its
detector is the Haar cascade, and Atelier runs with `--detector opencv` here too (the
official S3FD weights are not available offline), so the measured gap is the pipeline, not
the detector (bench/face_detectors.py compares the detectors).

    PYTHONPATH=src python bench/lipsync.py [--seconds 4] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from atelier.core.device import pick_device
from atelier.lipsync.audio import mel_chunks, melspectrogram
from atelier.lipsync.detect import HaarDetector, pad_boxes, smooth_boxes
from atelier.lipsync.hparams import load_hparams
from atelier.lipsync.infer import InferConfig, infer, load_wav2lip
from atelier.lipsync.media import describe
from atelier.lipsync.models import Wav2Lip
from atelier.lipsync.synthetic import make_face_video, make_speech_wav


def official_method(ckpt: Path, face: Path, audio: Path, out: Path, device: str) -> int:
    """inference.py's pipeline; returns the number of frames written."""
    import librosa

    hp = load_hparams()
    cap = cv2.VideoCapture(str(face))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    wav = librosa.load(str(audio), sr=16000)[0]
    chunks = mel_chunks(melspectrogram(wav, hp), fps, hp)
    frames = frames[: len(chunks)]

    # per-frame detection on full-resolution frames, official batch size, no downscaling
    detector = HaarDetector(max_side=10_000)
    boxes = []
    for i in range(0, len(frames), 16):
        for rect in detector.detect(frames[i : i + 16]):
            if rect is None:
                raise ValueError("Face not detected!")  # the official behaviour
            boxes.append(rect)
    h, w = frames[0].shape[:2]
    boxes = smooth_boxes(pad_boxes(np.array(boxes), (0, 10, 0, 0), h, w), 5)

    model = load_wav2lip(ckpt, device)
    dev = next(model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="official-") as tmp:
        avi = Path(tmp) / "result.avi"
        writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"DIVX"), fps, (w, h))
        for start in range(0, len(chunks), 128):
            idx = range(start, min(start + 128, len(chunks)))
            faces = []
            for i in idx:
                x1, y1, x2, y2 = boxes[i]
                faces.append(cv2.resize(frames[i][y1:y2, x1:x2], (96, 96)))
            img = np.asarray(faces)
            masked = img.copy()
            masked[:, 48:] = 0
            x = np.concatenate((masked, img), axis=3) / 255.0
            m = np.asarray([chunks[i] for i in idx])[..., None]
            xt = torch.FloatTensor(np.transpose(x, (0, 3, 1, 2))).to(dev)
            mt = torch.FloatTensor(np.transpose(m, (0, 3, 1, 2))).to(dev)
            with torch.no_grad():
                pred = model(mt, xt)
            pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0
            for p, i in zip(pred, idx, strict=True):
                x1, y1, x2, y2 = boxes[i]
                f = frames[i]
                f[y1:y2, x1:x2] = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
                writer.write(f)
        writer.release()
        mux(audio, avi, out)
    return len(chunks)


def mux(audio: Path, avi: Path, out: Path) -> None:
    """The official second encode: ffmpeg if installed, else the same transcode via PyAV."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-i", str(audio), "-i", str(avi),
               "-strict", "-2", "-q:v", "1", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True)
        return
    from atelier.lipsync.media import VideoWriter, iter_frames, video_fps

    first = next(iter_frames(avi))
    h, w = first.shape[:2]
    with VideoWriter(out, video_fps(avi), w, h, audio_source=audio, options={}) as writer:
        for frame in iter_frames(avi):
            writer.write(frame)


def train_rates(root: Path, device: str, steps: int, sync_bs: int, w2l_bs: int) -> dict:
    from atelier.lipsync.preprocess import PreprocessConfig, preprocess
    from atelier.lipsync.train_syncnet import TrainConfig, train_syncnet
    from atelier.lipsync.train_wav2lip import Wav2LipTrainConfig, train_wav2lip

    raw = root / "lrs2" / "main"
    for i in range(2):
        make_face_video(raw / f"s{i}" / f"{i:05d}.mp4", 2.0, 25, 320, 240)
    pre = root / "pre"
    preprocess(PreprocessConfig(raw, pre, make_filelists=True, val_ratio=0.5))
    hp = load_hparams(
        syncnet_batch_size=sync_bs, batch_size=w2l_bs, num_workers=0, save_optimizer_state=False,
        syncnet_eval_interval=10**9, eval_interval=10**9, checkpoint_interval=10**9,
        syncnet_checkpoint_interval=10**9, eval_steps=0, syncnet_eval_steps=0,
    )  # fmt: skip
    out = {}
    cfg = TrainConfig(pre, root / "sync", hparams=hp, device=device, max_steps=1, seed=0)
    expert = train_syncnet(cfg).checkpoints[-1]  # warm-up step (and the expert for train)
    t = time.perf_counter()
    train_syncnet(dataclasses.replace(cfg, checkpoint_dir=root / "sync2", max_steps=steps))
    out["train-syncnet"] = steps / (time.perf_counter() - t)
    wcfg = Wav2LipTrainConfig(pre, root / "w2l", hparams=hp.replace(syncnet_wt=0.01),
                              device=device, max_steps=steps, seed=0,
                              syncnet_checkpoint_path=expert)  # fmt: skip
    t = time.perf_counter()
    train_wav2lip(wcfg)
    out["train (syncnet_wt 0.01)"] = steps / (time.perf_counter() - t)
    return out


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--syncnet-batch-size", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("out/bench-lipsync"))
    args = ap.parse_args()
    device = str(pick_device(args.device))
    args.out.mkdir(parents=True, exist_ok=True)
    face = make_face_video(args.out / "face720p.mp4", args.seconds, 25, 1280, 720, False)
    audio = make_speech_wav(args.out / "speech.wav", args.seconds)
    torch.manual_seed(0)
    ckpt = args.out / "wav2lip_random.pth"
    torch.save({"state_dict": Wav2Lip().state_dict()}, ckpt)
    ffmpeg = shutil.which("ffmpeg") or "none (PyAV does the mux step)"
    print(f"device {device}, torch threads {torch.get_num_threads()}, ffmpeg binary: {ffmpeg}")

    # warm-up outside the timings: librosa/numba imports and JIT, codec libraries
    hp = load_hparams()
    mel_chunks(melspectrogram(np.zeros(16000, np.float32) + 1e-3, hp), 25.0, hp)
    describe(face)

    t = time.perf_counter()
    n_off = official_method(ckpt, face, audio, args.out / "official.mp4", device)
    off = n_off / (time.perf_counter() - t)
    t = time.perf_counter()
    cfg = InferConfig(ckpt, face, audio, args.out / "atelier.mp4", detector="opencv", device=device)
    res = infer(cfg)
    ate = res.frames / (time.perf_counter() - t)
    for name in ("official.mp4", "atelier.mp4"):
        info = describe(args.out / name)
        print(f"  {name}: {int(info['frames'])} frames, {info['fps']:g} fps, "
              f"{info['audio_seconds']:.2f} s audio")  # fmt: skip
    print(f"| official method (inference.py pipeline) | {n_off} | {off:.2f} |")
    print(f"| atelier lipsync infer | {res.frames} | {ate:.2f} |")
    print(f"| speed-up | | {ate / off:.2f}x |")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for name, rate in train_rates(
            Path(tmp), device, args.train_steps, args.syncnet_batch_size, args.batch_size
        ).items():
            print(f"| {name} | {rate:.3f} steps/s |")


if __name__ == "__main__":
    main()
