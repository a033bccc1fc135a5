"""The seedrec command line: dispatch, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from seedrec.cli import main


def test_help_lists_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for group in ("data", "train", "eval", "bench"):
        assert group in out


def test_unknown_benchmark_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "no_such_bench"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown benchmark 'no_such_bench'")
    assert "sample_build" in err
    assert len(err.splitlines()) == 1


def test_console_script_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "seedrec.cli", "data", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "synth" in proc.stdout and "build" in proc.stdout
