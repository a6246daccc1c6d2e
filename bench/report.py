"""What every bench script prints: the machine it ran on, and a Markdown table."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["machine", "markdown"]

_ROOT = Path(__file__).resolve().parent.parent


def machine(**extra: Any) -> dict[str, Any]:
    """The facts a figure needs beside it to mean anything: CPU model, cores, memory,
    Python, kernel, and which code was measured (``extra``: the script's own)."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError):
        kib = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        memory_gib = round(int(kib) / 2**20, 1)
    commit = subprocess.run(
        ["git", "-C", str(_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "arbstr_commit": commit or "?",
        **extra,
    }


def markdown(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """The table as Markdown, to paste into the README as it is."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    return "\n".join(lines)
