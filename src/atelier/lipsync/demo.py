"""The lipsync step of `atelier demo`: the whole Wav2Lip workflow on media made on the spot.

Two short clips of a real face (scikit-image's astronaut photo, moving) with a voice
track -> preprocess -> a couple of expert SyncNet steps -> a Wav2Lip step -> inference
with that (random-weight) model. Small batches and no optimizer state in checkpoints
keep it to seconds on a CPU; the outputs are real files in the official formats.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console


def run(out: str | Path, device: str = "auto") -> None:
    from atelier.lipsync.hparams import load_hparams
    from atelier.lipsync.infer import InferConfig, infer
    from atelier.lipsync.media import describe
    from atelier.lipsync.preprocess import PreprocessConfig, preprocess
    from atelier.lipsync.synthetic import make_face_video, make_speech_wav
    from atelier.lipsync.train_syncnet import TrainConfig, train_syncnet
    from atelier.lipsync.train_wav2lip import Wav2LipTrainConfig, train_wav2lip

    console = Console()
    out = Path(out) / "lipsync"
    started = time.perf_counter()
    console.rule("[bold]lipsync: preprocess -> train-syncnet -> train -> infer")
    raw = out / "lrs2" / "main"
    for i, blank in ((1, [9]), (2, [])):
        make_face_video(raw / f"spk{i}" / f"0000{i}.mp4", 1.2, 25, 240, 180, no_face=blank)
    pre = preprocess(
        PreprocessConfig(raw, out / "preprocessed", make_filelists=True, val_ratio=0.5)
    )
    for v in pre.videos:
        state = "kept from an earlier run" if v.skipped else f"{v.frames} frames"
        gaps = f", no face in frame(s) {v.without_face}" if v.without_face else ""
        console.print(f"preprocess {v.name}: {state}{gaps}")

    hp = load_hparams(
        syncnet_batch_size=2, batch_size=2, num_workers=0, save_optimizer_state=False,
        syncnet_eval_interval=1, syncnet_eval_steps=0, eval_interval=1000, eval_steps=0,
        checkpoint_interval=1000, syncnet_checkpoint_interval=1000,
    )  # fmt: skip
    expert = train_syncnet(
        TrainConfig(out / "preprocessed", out / "syncnet", hparams=hp, device=device,
                    max_steps=1, seed=0)
    )  # fmt: skip
    console.print(
        f"train-syncnet: losses {[round(x, 4) for x in expert.losses]}, "
        f"eval {expert.eval_losses[-1][1]:.4f} -> {expert.checkpoints[-1]}"
    )
    w2l = train_wav2lip(
        Wav2LipTrainConfig(out / "preprocessed", out / "wav2lip", hparams=hp, device=device,
                           max_steps=1, seed=0, syncnet_checkpoint_path=expert.checkpoints[-1])
    )  # fmt: skip
    console.print(
        f"train: loss {w2l.losses[-1]:.4f}, eval sync {w2l.eval_losses[-1][1]:.4f} "
        f"-> {w2l.checkpoints[-1]}"
    )
    face = make_face_video(out / "input" / "face.mp4", 1.2, 25, 240, 180, with_audio=False)
    speech = make_speech_wav(out / "input" / "speech.wav", 1.0)
    result = infer(
        InferConfig(w2l.checkpoints[-1], face, speech, out / "result.mp4", device=device,
                    wav2lip_batch_size=16)
    )  # fmt: skip
    info = describe(result.outfile)
    console.print(
        f"infer: {result.outfile} - {int(info['frames'])} frames at {info['fps']:g} fps, "
        f"{info['audio_seconds']:.2f} s of audio (random-weight model: the mouth is noise)"
    )
    console.print(f"lipsync demo done in {time.perf_counter() - started:.1f} s")
