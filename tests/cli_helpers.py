"""Helpers shared by the command-line tests: run ``ultra-sparse`` in a subprocess or in-process, snapshot a folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-c", "from ultra_sparse.cli import entrypoint; entrypoint()"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``ultra-sparse ARGS`` in ``cwd`` with this interpreter; capture its output."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def cli_in_process(monkeypatch, capture, *argv: str) -> tuple[int, str, str]:
    """Run the console script in-process (``monkeypatch`` reaches it); return (exit status, stdout, stderr).

    ``capture`` is pytest's ``capsys`` or ``capfd`` (the latter also sees what the logger writes to the descriptors).
    """
    import pytest

    from ultra_sparse.cli import entrypoint

    monkeypatch.setattr(sys, "argv", ["ultra-sparse", *argv])
    with pytest.raises(SystemExit) as exit_info:
        entrypoint()
    out, err = capture.readouterr()
    return exit_info.value.code, out, err


def one_error_line(status: int, err: str) -> str:
    """Assert that a run was refused as a user should see it (exit 2, one ``ultra-sparse: error:`` line, no
    traceback) and return that line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("ultra-sparse: error:") and "Traceback" not in err
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: equal snapshots mean nothing was written or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
