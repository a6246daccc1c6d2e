"""What every bench script prints: the machine it ran on, and a Markdown table."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["machine", "markdown"]


def machine(**extra: Any) -> dict[str, Any]:
    """The facts a figure needs beside it to mean anything."""
    return {
        "python": platform.python_version(),
        **extra,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def markdown(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """The table as Markdown, to paste into the README as it is."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    return "\n".join(lines)
