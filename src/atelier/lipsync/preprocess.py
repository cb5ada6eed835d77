"""LRS2-style videos -> per-frame face crops `N.jpg` + `audio.wav`, the official layout.

For every `DATA_ROOT/*/*.mp4`, writes `OUT/<dir>/<vid>/{0,1,...}.jpg` (frames without a
face are skipped, as the official script does, and reported) and `audio.wav` (16 kHz
mono PCM). Each video is built in a hidden temporary directory and renamed into place
when complete, so a finished directory means a finished video: reruns skip them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

from atelier.core.atomic import atomic_dir, write_text_atomic
from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.core.paths import output_folder
from atelier.core.progress import progress_bar
from atelier.core.workers import process_pool

log = get_logger(__name__)

REPORT_NAME = "faces.json"


@dataclasses.dataclass
class PreprocessConfig:
    data_root: Path
    preprocessed_root: Path
    detector: str = "retinaface"
    s3fd_path: Path | None = None
    batch_size: int = 32
    workers: int = 1
    device: str = "auto"
    sample_rate: int = 16000
    make_filelists: bool = False
    val_ratio: float = 0.05
    seed: int = 0
    filelists_dir: Path | None = None  # default: PREPROCESSED_ROOT/filelists


@dataclasses.dataclass
class VideoReport:
    name: str  # "<dir>/<vid>", the filelist entry
    frames: int = 0
    without_face: list[int] = dataclasses.field(default_factory=list)
    skipped: bool = False  # already done by an earlier run
    error: str | None = None
    unusable: str | None = None  # why the trainers could not use it (left out of filelists)


@dataclasses.dataclass
class PreprocessReport:
    videos: list[VideoReport]
    train: list[str] = dataclasses.field(default_factory=list)
    val: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> list[VideoReport]:
        return [v for v in self.videos if v.error]

    @property
    def unusable(self) -> list[VideoReport]:
        return [v for v in self.videos if not v.error and v.unusable]


def _process_one(video: Path, out_dir: Path, cfg: PreprocessConfig) -> VideoReport:
    import cv2

    from atelier.lipsync.detect import detect_all, make_detector
    from atelier.lipsync.media import iter_frames, read_audio, write_wav

    report = VideoReport(name=f"{video.parent.name}/{video.stem}")
    detector = make_detector(cfg.detector, cfg.s3fd_path, cfg.device)
    wav = read_audio(video, cfg.sample_rate)  # fail before decoding every frame
    with atomic_dir(out_dir) as tmp:
        batch: list = []
        index = 0

        def flush() -> None:
            nonlocal index
            for frame, box in zip(batch, detect_all(detector, batch, cfg.batch_size), strict=True):
                if box is None:
                    report.without_face.append(index)
                else:
                    x1, y1, x2, y2 = box
                    cv2.imwrite(str(tmp / f"{index}.jpg"), frame[y1:y2, x1:x2])
                index += 1
            batch.clear()

        for frame in iter_frames(video):
            batch.append(frame)
            if len(batch) >= cfg.batch_size:
                flush()
        flush()
        report.frames = index
        if index == 0:
            raise AtelierError(f"{video}: no frames decoded")
        write_wav(tmp / "audio.wav", wav, cfg.sample_rate)
        # Kept beside the crops (the official trainers read only *.jpg and audio.wav) so a
        # resumed run still reports this video's gaps.
        (tmp / REPORT_NAME).write_text(json.dumps(dataclasses.asdict(report)))
    return report


def _job(args: tuple[Path, Path, PreprocessConfig]) -> VideoReport:
    video, out_dir, cfg = args
    name = f"{video.parent.name}/{video.stem}"
    try:
        return _process_one(video, out_dir, cfg)
    except FileExistsError:
        # Another process (an orphan of a killed run, or a concurrent run) finished this
        # video while we worked on it: its folder is complete (renamed in whole), keep it.
        if (out_dir / "audio.wav").is_file():
            return _earlier_report(out_dir, name)
        return VideoReport(name=name, error=f"{out_dir} exists and is not ours; move it away")
    except AtelierError as e:
        return VideoReport(name=name, error=str(e))


def _earlier_report(out_dir: Path, name: str) -> VideoReport:
    try:
        saved = json.loads((out_dir / REPORT_NAME).read_text())
        report = VideoReport(name, saved.get("frames", 0), list(saved.get("without_face", [])))
    except (OSError, ValueError):
        report = VideoReport(name)
    report.skipped = True
    return report


def split_filelists(names: list[str], val_ratio: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded shuffle then split; with one video it serves as both (tiny trials only)."""
    names = sorted(names)
    if len(names) < 2:
        return names, list(names)
    rng = random.Random(seed)
    rng.shuffle(names)
    n_val = min(len(names) - 1, max(1, round(len(names) * val_ratio)))
    return sorted(names[n_val:]), sorted(names[:n_val])


def check_config(cfg: PreprocessConfig) -> None:
    """Every parameter, before anything is read or written (library callers get this too)."""
    from atelier.lipsync.detect import DETECTORS

    if cfg.detector not in DETECTORS:
        raise AtelierError(f"--detector {cfg.detector!r}: use one of {', '.join(DETECTORS)}")
    for flag, value in (("--batch-size", cfg.batch_size), ("--workers", cfg.workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AtelierError(f"{flag} {value!r}: must be a whole number >= 1")
    if not (isinstance(cfg.sample_rate, int) and 1000 <= cfg.sample_rate <= 384000):
        raise AtelierError(f"sample_rate {cfg.sample_rate!r}: must be 1000..384000 Hz")
    ratio = cfg.val_ratio
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and 0 <= ratio < 1):
        raise AtelierError(f"--val-ratio {ratio!r}: must be a share in [0, 1)")


def preprocess(cfg: PreprocessConfig) -> PreprocessReport:
    check_config(cfg)
    data_root, out_root = Path(cfg.data_root), Path(cfg.preprocessed_root)
    if not data_root.is_dir():
        raise AtelierError(f"--data-root {data_root}: not a directory")
    videos = sorted(data_root.glob("*/*.mp4"))
    if not videos:
        raise AtelierError(f"--data-root {data_root}: no */*.mp4 videos (LRS2 main/ layout)")
    # fail fast on a bad weights path or a missing package, not once per video
    from atelier.lipsync.detect import make_detector

    make_detector(cfg.detector, cfg.s3fd_path, "cpu")
    output_folder(out_root, "--preprocessed-root")
    if cfg.filelists_dir is not None:
        output_folder(cfg.filelists_dir, "--filelists-dir")

    reports: list[VideoReport] = []
    todo = []
    for video in videos:
        out_dir = out_root / video.parent.name / video.stem
        if out_dir.is_dir() and (out_dir / "audio.wav").is_file():
            reports.append(_earlier_report(out_dir, f"{video.parent.name}/{video.stem}"))
        else:
            todo.append((video, out_dir, cfg))
    log.info("preprocess: %d video(s), %d already done", len(videos), len(videos) - len(todo))

    with progress_bar("preprocess", total=len(todo), unit="videos") as bar:
        if cfg.workers > 1 and len(todo) > 1:
            # workers die with this process: a killed run leaves no orphan renaming folders
            with process_pool(min(cfg.workers, len(todo))) as pool:
                results = pool.map(_job, todo)
                for r in results:
                    reports.append(r)
                    bar.advance(0)
        else:
            for job in todo:
                reports.append(_job(job))
                bar.advance(0)
    for r in reports:
        if r.error:
            log.error("%s: %s", r.name, r.error)
        elif r.without_face:
            log.warning(
                "%s: no face in %d of %d frame(s): %s", r.name, len(r.without_face), r.frames,
                _ranges(r.without_face),
            )  # fmt: skip
    from atelier.lipsync.dataset import unusable_reason
    from atelier.lipsync.hparams import load_hparams

    syncnet_t = load_hparams().syncnet_T
    for r in reports:
        if not r.error:
            with_face = sorted(set(range(r.frames)) - set(r.without_face))
            r.unusable = unusable_reason(with_face, syncnet_t)
            if r.unusable:
                log.warning("%s: left out of the filelists: %s", r.name, r.unusable)
    reports.sort(key=lambda r: r.name)
    result = PreprocessReport(reports)
    done = [r.name for r in reports if not r.error and not r.unusable]
    write_text_atomic(
        out_root / "preprocess_report.json",
        json.dumps([dataclasses.asdict(r) for r in reports], indent=1),
    )
    if cfg.make_filelists:
        if not done:
            raise AtelierError(
                f"--make-filelists: none of the {len(reports)} video(s) can train (failed or "
                f"unusable: see {out_root / 'preprocess_report.json'}); filelists not written"
            )
        result.train, result.val = split_filelists(done, cfg.val_ratio, cfg.seed)
        lists = Path(cfg.filelists_dir) if cfg.filelists_dir else out_root / "filelists"
        lists.mkdir(parents=True, exist_ok=True)
        write_text_atomic(lists / "train.txt", "".join(f"{n}\n" for n in result.train))
        write_text_atomic(lists / "val.txt", "".join(f"{n}\n" for n in result.val))
    return result


def _ranges(idx: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7" for readable reports."""
    parts, start, prev = [], idx[0], idx[0]
    for i in [*idx[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)
