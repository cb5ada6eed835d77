"""Running `atelier dws ...` in-process and checking the one-line error policy."""

from __future__ import annotations

from atelier.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); a parse-time refusal (SystemExit) counts as its code."""
    try:
        code = main(["dws", *argv])
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    """The single `atelier: error: ...` line of an exit-2 run."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("atelier: error: ")
    return lines[0]
