"""`atelier lipsync ...` flags: the official Wav2Lip scripts' options, dashed or underscored."""

from __future__ import annotations

import argparse
from pathlib import Path

from atelier.core.flags import POSITIVE_INT, SEED, Float, Int


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _hparam_flags(p: argparse.ArgumentParser, train_wav2lip: bool) -> None:
    g = p.add_argument_group("hyperparameters (default: the official hparams.py)")
    g.add_argument("--hparams", type=Path, help="YAML file of overrides (same keys as hparams.py)")
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one hyperparameter, e.g. --set eval_interval=1000 (repeatable)",
    )
    g.add_argument("--batch-size", "--batch_size", type=Int(1, 1 << 16), help="training batch size")
    g.add_argument("--lr", type=Float(0, 10, lo_open=True), help="learning rate")
    g.add_argument("--eval-interval", type=POSITIVE_INT, help="steps between evals")
    g.add_argument("--checkpoint-interval", type=POSITIVE_INT, help="steps between checkpoints")
    g.add_argument(
        "--workers", type=Int(0, 256), help="DataLoader workers (hparams num_workers: 16)"
    )
    g.add_argument("--max-steps", type=POSITIVE_INT, help="stop (and save) at this global step")
    g.add_argument("--device", default="auto", help="auto | cuda | npu | cpu | mps")
    g.add_argument("--seed", type=SEED, default=None)
    g.add_argument(
        "--filelists-dir", type=Path, help="where train.txt/val.txt are (DATA_ROOT/filelists)"
    )
    p.set_defaults(train_wav2lip=train_wav2lip)


def _detector_flags(p: argparse.ArgumentParser) -> None:
    from atelier.lipsync.detector_names import DETECTORS

    p.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DETECTORS[0],
        help="face detector (default %(default)s; rates and speeds in docs/lipsync.md)",
    )
    p.add_argument("--s3fd-path", "--s3fd_path", type=Path, help="s3fd.pth (for --detector s3fd)")


def register(suites: argparse._SubParsersAction) -> None:
    ls = suites.add_parser("lipsync", help="Wav2Lip preprocessing, training and inference")
    verbs = ls.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("preprocess", help="LRS2-style videos -> face crops + audio.wav")
    p.add_argument("--data-root", "--data_root", type=Path, required=True, help="e.g. LRS2/main")
    p.add_argument(
        "--preprocessed-root", "--preprocessed_root", type=Path, required=True, help="output root"
    )
    _detector_flags(p)
    p.add_argument(
        "--batch-size", "--batch_size", type=Int(1, 1 << 16), default=32, help="detection batch"
    )
    p.add_argument("--workers", type=Int(1, 256), default=1, help="videos processed in parallel")
    p.add_argument("--device", default="auto")
    p.add_argument("--make-filelists", action="store_true", help="write filelists/train,val.txt")
    p.add_argument(
        "--val-ratio",
        type=Float(0, 1, hi_open=True),
        default=0.05,
        help="share of videos for val.txt",
    )
    p.add_argument("--seed", type=SEED, default=0, help="split seed")
    p.add_argument("--filelists-dir", type=Path, help="default PREPROCESSED_ROOT/filelists")
    p.set_defaults(func=run_preprocess)

    p = verbs.add_parser("train-syncnet", help="train the expert lip-sync discriminator")
    p.add_argument("--data-root", "--data_root", type=Path, required=True)
    p.add_argument("--checkpoint-dir", "--checkpoint_dir", type=Path, required=True)
    p.add_argument("--checkpoint-path", "--checkpoint_path", type=Path, help="resume from here")
    _hparam_flags(p, train_wav2lip=False)
    p.set_defaults(func=run_train)

    p = verbs.add_parser("train", help="train Wav2Lip (--disc: with the quality discriminator)")
    p.add_argument("--data-root", "--data_root", type=Path, required=True)
    p.add_argument("--checkpoint-dir", "--checkpoint_dir", type=Path, required=True)
    p.add_argument(
        "--syncnet-checkpoint-path", "--syncnet_checkpoint_path", type=Path, required=True
    )
    p.add_argument("--checkpoint-path", "--checkpoint_path", type=Path, help="resume from here")
    p.add_argument("--disc", action="store_true", help="GAN variant (hq_wav2lip_train.py)")
    p.add_argument("--disc-checkpoint-path", "--disc_checkpoint_path", type=Path)
    _hparam_flags(p, train_wav2lip=True)
    p.set_defaults(func=run_train)

    p = verbs.add_parser("infer", help="lip-sync a face video/image to an audio track")
    p.add_argument("--checkpoint-path", "--checkpoint_path", type=Path, required=True)
    p.add_argument("--face", type=Path, required=True, help="video or image with a face")
    p.add_argument("--audio", type=Path, required=True, help="wav/mp3/m4a or a video's audio")
    p.add_argument("--outfile", type=Path, default=Path("results/result_voice.mp4"))
    p.add_argument("--static", nargs="?", const=True, default=False, type=_bool)
    p.add_argument(
        "--fps", type=Float(0, 1000, lo_open=True), default=25.0, help="for a still image"
    )
    p.add_argument("--pads", nargs=4, type=Int(-4096, 4096), default=[0, 10, 0, 0], metavar="N")
    p.add_argument(
        "--face-det-batch-size", "--face_det_batch_size", type=Int(1, 1 << 16), default=16
    )
    p.add_argument(
        "--wav2lip-batch-size", "--wav2lip_batch_size", type=Int(1, 1 << 16), default=128
    )
    p.add_argument("--resize-factor", "--resize_factor", type=Int(1, 64), default=1)
    p.add_argument("--crop", nargs=4, type=Int(-1, 1 << 16), default=[0, -1, 0, -1], metavar="N")
    p.add_argument("--box", nargs=4, type=Int(-1, 1 << 16), default=[-1, -1, -1, -1], metavar="N")
    p.add_argument("--rotate", action="store_true")
    p.add_argument("--nosmooth", action="store_true")
    _detector_flags(p)
    p.add_argument("--device", default="auto", help="auto | cuda | npu | cpu | mps")
    p.set_defaults(func=run_infer)


def run_preprocess(args: argparse.Namespace) -> int:
    from atelier.lipsync.preprocess import PreprocessConfig, preprocess

    report = preprocess(
        PreprocessConfig(
            data_root=args.data_root,
            preprocessed_root=args.preprocessed_root,
            detector=args.detector,
            s3fd_path=args.s3fd_path,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            make_filelists=args.make_filelists,
            val_ratio=args.val_ratio,
            seed=args.seed,
            filelists_dir=args.filelists_dir,
        )
    )
    done = [v for v in report.videos if not v.error]
    print(
        f"{len(done)} video(s) ready in {args.preprocessed_root} "
        f"({sum(v.skipped for v in done)} from an earlier run), {len(report.failed)} failed"
    )
    for v in report.videos:
        if v.unusable:
            print(f"  {v.name}: left out of the filelists ({v.unusable})")
        elif v.without_face:
            print(f"  {v.name}: {len(v.without_face)}/{v.frames} frame(s) without a face")
    if report.train or report.val:
        print(f"filelists: {len(report.train)} train, {len(report.val)} val")
    return 1 if report.failed and not done else 0


def run_train(args: argparse.Namespace) -> int:
    from atelier.core.errors import AtelierError
    from atelier.lipsync.hparams import load_hparams

    sets: dict[str, str] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise AtelierError(f"--set {item!r}: expected KEY=VALUE")
        sets[key.strip()] = value.strip()
    hp = load_hparams(args.hparams, "--set", **sets)
    prefix = "" if args.train_wav2lip else "syncnet_"
    flags = {
        "--batch-size": (f"{prefix}batch_size", args.batch_size),
        "--lr": ("initial_learning_rate" if args.train_wav2lip else "syncnet_lr", args.lr),
        "--eval-interval": (f"{prefix}eval_interval", args.eval_interval),
        "--checkpoint-interval": (f"{prefix}checkpoint_interval", args.checkpoint_interval),
        "--workers": ("num_workers", args.workers),
    }
    for flag, (key, value) in flags.items():  # one at a time, so an error names its flag
        hp = hp.replace(flag, **{key: value})
    common = dict(
        data_root=args.data_root,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_path=args.checkpoint_path,
        hparams=hp,
        device=args.device,
        filelists_dir=args.filelists_dir,
        max_steps=args.max_steps,
        seed=args.seed,
    )
    if args.train_wav2lip:
        from atelier.lipsync.train_wav2lip import Wav2LipTrainConfig, train_wav2lip

        result = train_wav2lip(
            Wav2LipTrainConfig(
                **common,
                syncnet_checkpoint_path=args.syncnet_checkpoint_path,
                disc=args.disc,
                disc_checkpoint_path=args.disc_checkpoint_path,
            )
        )
    else:
        from atelier.lipsync.train_syncnet import TrainConfig, train_syncnet

        result = train_syncnet(TrainConfig(**common))
    last = result.eval_losses[-1][1] if result.eval_losses else float("nan")
    print(
        f"step {result.global_step} (epoch {result.global_epoch}); last eval loss {last:.4f}; "
        f"latest checkpoint {result.checkpoints[-1] if result.checkpoints else '-'}"
    )
    return 0


def run_infer(args: argparse.Namespace) -> int:
    from atelier.lipsync.infer import InferConfig, infer

    result = infer(
        InferConfig(
            checkpoint_path=args.checkpoint_path,
            face=args.face,
            audio=args.audio,
            outfile=args.outfile,
            static=args.static,
            fps=args.fps,
            pads=tuple(args.pads),
            face_det_batch_size=args.face_det_batch_size,
            wav2lip_batch_size=args.wav2lip_batch_size,
            resize_factor=args.resize_factor,
            crop=tuple(args.crop),
            box=tuple(args.box),
            rotate=args.rotate,
            nosmooth=args.nosmooth,
            detector=args.detector,
            s3fd_path=args.s3fd_path,
            device=args.device,
        )
    )
    note = f", {len(result.interpolated)} face box(es) interpolated" if result.interpolated else ""
    print(
        f"wrote {result.outfile}: {result.frames} frames at {result.fps:g} fps "
        f"in {result.seconds:.1f} s{note}"
    )
    return 0
