"""core: atomic writes and device choice."""

from __future__ import annotations

import pytest

from atelier.core.atomic import atomic_dir, atomic_file, commit_files, temp_sibling
from atelier.core.device import pick_device, resolve_device_name
from atelier.core.errors import AtelierError


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]


def test_atomic_dir_and_overwrite(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as d:
        (d / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    with pytest.raises(FileExistsError), atomic_dir(final) as d:
        (d / "b").write_text("2")
    assert not (final / "b").exists()
    with atomic_dir(final, overwrite=True) as d:
        (d / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_commit_files_renames_index_last(tmp_path):
    bin_tmp, idx_tmp = temp_sibling(tmp_path / "d.bin"), temp_sibling(tmp_path / "d.idx")
    bin_tmp.write_text("b")
    idx_tmp.write_text("i")
    (tmp_path / "d.idx").write_text("old index")
    commit_files([(idx_tmp, tmp_path / "d.idx"), (bin_tmp, tmp_path / "d.bin")])
    assert (tmp_path / "d.bin").read_text() == "b" and (tmp_path / "d.idx").read_text() == "i"


def test_device_choice():
    assert resolve_device_name("auto") in {"cpu", "cuda", "npu"}
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(AtelierError, match="unknown device"):
        resolve_device_name("tpu")
