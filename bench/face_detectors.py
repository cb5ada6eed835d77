"""Face detectors on real talking-face footage: detection rate, false alarms and speed.

Each clip is given as PATH or PATH:FIRST-LAST, the frames that show a face (all of them
when no range is given; the others count as face-free, where a box is a false alarm).
Every detector sees the same decoded frames in the same run, in batches of 16, through
Atelier's own `make_detector`; speed is frames per second of `detect()` alone, so only
same-run ratios mean anything on a shared machine. No media is bundled: pass your own
clips (docs/lipsync.md lists the ones behind the published figures).

    PYTHONPATH=src python bench/face_detectors.py /data/media/1.mp4 /data/media/2.avi:0-46 \
        clips/*.mp4 [--detectors retinaface,opencv,mtcnn] [--stride 2] [--s3fd-path s3fd.pth]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from atelier.lipsync.detect import DETECTORS, make_detector
from atelier.lipsync.media import iter_frames


def parse_clip(spec: str) -> tuple[Path, tuple[int, int] | None]:
    path, sep, span = spec.rpartition(":")
    if not sep or not span.replace("-", "").isdigit():
        return Path(spec), None
    first, _, last = span.partition("-")
    return Path(path), (int(first), int(last or first))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", help="PATH or PATH:FIRST-LAST (frames with a face)")
    ap.add_argument("--detectors", default=",".join(d for d in DETECTORS if d != "s3fd"))
    ap.add_argument("--stride", type=int, default=1, help="use every Nth frame")
    ap.add_argument("--s3fd-path", type=Path)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    kinds = args.detectors.split(",")
    if args.s3fd_path and "s3fd" not in kinds:
        kinds.append("s3fd")

    totals = {k: {"hit": 0, "faces": 0, "false": 0, "empty": 0, "seconds": 0.0} for k in kinds}
    print(f"{'clip':28} {'detector':11} {'found/faces':>12} {'false/empty':>12} {'frames/s':>9}")
    for spec in args.clips:
        path, span = parse_clip(spec)
        frames = list(iter_frames(path))
        idx = list(range(0, len(frames), args.stride))
        has_face = [span is None or span[0] <= i <= span[1] for i in idx]
        picked = [frames[i] for i in idx]
        for kind in kinds:
            detector = make_detector(kind, args.s3fd_path, args.device)  # fresh: no tracking
            detector.detect(picked[:1])  # warm-up (session/graph creation), not timed
            detector = make_detector(kind, args.s3fd_path, args.device)
            start = time.perf_counter()
            boxes = []
            for i in range(0, len(picked), 16):
                boxes.extend(detector.detect(picked[i : i + 16]))
            seconds = time.perf_counter() - start
            t = totals[kind]
            hit = sum(b is not None and f for b, f in zip(boxes, has_face, strict=True))
            false = sum(b is not None and not f for b, f in zip(boxes, has_face, strict=True))
            faces = sum(has_face)
            t["hit"] += hit
            t["faces"] += faces
            t["false"] += false
            t["empty"] += len(has_face) - faces
            t["seconds"] += seconds
            empty = len(has_face) - faces
            print(
                f"{path.name:28} {kind:11} {hit:>5}/{faces:<6} {false:>5}/{empty:<6} "
                f"{len(picked) / seconds:9.1f}",
                flush=True,
            )
    print("\ntotal")
    base = totals[kinds[0]]["seconds"]
    for kind, t in totals.items():
        frames = t["faces"] + t["empty"]
        print(
            f"{kind:11} detection {t['hit']}/{t['faces']} = {t['hit'] / max(1, t['faces']):.1%}, "
            f"false alarms {t['false']}/{t['empty']}, {frames / t['seconds']:.1f} frames/s "
            f"({t['seconds'] / base:.2f}x the time of {kinds[0]})"
        )


if __name__ == "__main__":
    main()
