"""The demo step needs no database and finds the skewed implicit key."""

from __future__ import annotations

import json

from atelier.dws.demo import SAMPLE, build_sample, run


def test_demo_offline(tmp_path):
    run(tmp_path)
    rep = json.loads((tmp_path / "dws" / "skew.json").read_text())
    assert rep["current_key"] == ["status"]
    assert rep["recommendation"]["key"] == ["order_id"]


def test_bundled_sample_is_reproducible(tmp_path):
    from importlib import resources

    build_sample(tmp_path / SAMPLE)
    bundled = (resources.files("atelier.dws.assets") / SAMPLE).read_bytes()
    assert (tmp_path / SAMPLE).read_bytes() == bundled
