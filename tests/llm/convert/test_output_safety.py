"""Outputs of the converters: the user's files stay, modes follow the umask, a full
disk or a kill never costs the old output (issue 10, items 1, 2, 4, 21, 22)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.convert import Hf2MgOptions, hf2mg, mg2hf

from .helpers import assert_same_state, hf_state


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_mg2hf_into_the_original_hf_folder_keeps_every_user_file(hf_model, tmp_path):
    hf = tmp_path / "Llama"
    shutil.copytree(hf_model("llama"), hf)
    (hf / "README.md").write_text("my notes")
    before = _digests(hf)
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", tp=2))
    for overwrite in (True, True):  # twice: the second run replaces only its own output
        files = mg2hf(tmp_path / "mg", hf, hf_config_dir=hf, overwrite=overwrite)
        assert "mg2hf/config.json" in files
    after = _digests(hf)
    assert {k: v for k, v in after.items() if not k.startswith("mg2hf/")} == before
    assert_same_state(hf_state(hf), hf_state(hf / "mg2hf"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Llama", "mg"]  # no temporaries


def test_mg2hf_refuses_a_foreign_mg2hf_subfolder(hf_model, tmp_path):
    hf = tmp_path / "Llama"
    shutil.copytree(hf_model("llama"), hf)
    (hf / "mg2hf").mkdir()
    (hf / "mg2hf" / "mine.txt").write_text("user data")
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg"))
    with pytest.raises(AtelierError, match=r"mg2hf holds files Atelier did not write \(mine"):
        mg2hf(tmp_path / "mg", hf, overwrite=True)
    assert (hf / "mg2hf" / "mine.txt").read_text() == "user data"


@pytest.mark.parametrize("mask,fmode,dmode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_converted_outputs_honour_the_umask(hf_model, tmp_path, mask, fmode, dmode):
    old = os.umask(mask)
    try:
        hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=tmp_path / "mg", tp=2))
        mg2hf(tmp_path / "mg", tmp_path / "hf")
    finally:
        os.umask(old)
    for root in (tmp_path / "mg", tmp_path / "hf"):
        assert stat.S_IMODE(root.stat().st_mode) == dmode
        for p in root.rglob("*"):
            want = dmode if p.is_dir() else fmode
            assert stat.S_IMODE(p.stat().st_mode) == want, p


def test_hf_config_dir_with_another_vocab_size_is_flagged(hf_model, tmp_path):
    hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=tmp_path / "mg"))
    cfg_dir = tmp_path / "cfg"
    shutil.copytree(hf_model("llama"), cfg_dir)
    cfg = json.loads((cfg_dir / "config.json").read_text())
    cfg["vocab_size"] += 8
    (cfg_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        AtelierError, match=r"vocab_size is 308 but the Megatron checkpoint has 300"
    ):
        mg2hf(tmp_path / "mg", tmp_path / "out", hf_config_dir=cfg_dir)
    assert not (tmp_path / "out").exists()


def test_not_enough_space_is_refused_before_writing(hf_model, tmp_path, monkeypatch):
    from atelier.core import errors

    monkeypatch.setattr(errors, "free_bytes", lambda path: 1000)
    with pytest.raises(
        errors.DiskFullError, match=r"^disk full at .*: [\d.]+ [KMG]B needed, 1000 bytes free"
    ):
        hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=tmp_path / "mg"))
    assert sorted(tmp_path.iterdir()) == []


TINY_FS_RUN = textwrap.dedent(
    """
    import sys
    import atelier.llm.convert.output_dir as o
    o.require_free = lambda *a, **k: None  # let the writes themselves hit the full disk
    from atelier.cli.main import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


def _tiny_tmpfs(where: Path, size: str) -> Path:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir()
    rc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)])
    if rc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (container without CAP_SYS_ADMIN?)")
    return where


def test_full_disk_mid_write_is_one_line_not_sigabrt(hf_model, tmp_path):
    """hf2mg died in `basic_ios::clear` (SIGABRT, rc 134) when the disk filled up."""
    fs = _tiny_tmpfs(tmp_path / "fs", "600k")
    try:
        argv = ["llm", "convert", "hf2mg", "--load-dir", str(hf_model("llama")),
                "--save-dir", str(fs / "mg"), "-T", "2", "-P", "2"]  # fmt: skip
        r = subprocess.run(
            [sys.executable, "-c", TINY_FS_RUN, *argv], capture_output=True, text=True
        )
        assert r.returncode == 2, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
        err = [x for x in r.stderr.splitlines() if x.startswith("atelier: error:")]
        assert err == [err[0]] and f"disk full at {fs / 'mg'}:" in err[0], r.stderr
        assert sorted(os.listdir(fs)) == []  # the temporary folder is gone
    finally:
        subprocess.run(["umount", str(fs)])


def test_overwrite_never_moves_the_save_dir_away(hf_model, tmp_path, monkeypatch):
    """`hf2mg --overwrite` parked the old folder as `.ow.*.old` and a kill before the
    next rename left no save dir. Now the new folder is exchanged in atomically: the
    save dir's name is never the source of a rename, so it never goes missing."""
    from atelier.core import atomic

    hf, mg = hf_model("llama"), tmp_path / "mg"
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=mg))
    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir()
    probe_b.mkdir()
    if not atomic.exchange(probe_a, probe_b):
        pytest.skip("this filesystem has no atomic exchange (the parked-copy fallback is used)")
    probe_a.rmdir()
    probe_b.rmdir()
    moved: list[str] = []
    real = os.replace

    def spy(src, dst):
        moved.append(str(src))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=mg, tp=2, overwrite=True))
    assert str(mg) not in moved
    assert (mg / "iter_0000001" / "mp_rank_01").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mg"]


def test_partial_folder_of_a_killed_conversion_is_removed_by_the_next_run(
    hf_model, tmp_path, caplog
):
    """~470 MB per killed conversion piled up; the next run now removes it, and says so."""
    import logging

    from atelier.core import atomic

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".mg.{atomic.owner_tag().rsplit('-', 1)[0]}-{dead.pid}.k1ll3d.partial"
    (stale / "iter_0000001").mkdir(parents=True)
    (stale / "iter_0000001" / "model_optim_rng.pt").write_bytes(b"x" * 4096)
    past = atomic.RUN_STARTED - 60
    os.utime(stale, (past, past))
    with caplog.at_level(logging.INFO, logger="atelier.core.atomic"):
        hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=tmp_path / "mg"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mg"]
    assert any("removed 1 stale temporary of killed runs" in r.message for r in caplog.records)
