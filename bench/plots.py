"""PNG plots of one run, for the README: the same three clients in the same colours.

matplotlib is the ``bench`` extra (``pip install '.[bench]'``); without it the suite
still prints and saves its table, and says the plots were skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_all"]

_COLOURS = {"direct": "#888888", "arbstr": "#1f77b4", "litellm": "#d62728"}
_LABELS = {"direct": "direct (upstream)", "arbstr": "arbstr-trio", "litellm": "LiteLLM"}


def plot_all(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    """Write the plots next to the JSON; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = [n for n in ("direct", "arbstr", "litellm") if n in results["nonstreaming"][0]]

    # 1. non-streaming: throughput and latency against concurrency
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    levels = [row["concurrency"] for row in results["nonstreaming"]]
    for name in names:
        rps = [row[name]["throughput"] for row in results["nonstreaming"]]
        p50 = [row[name]["p50_ms"] for row in results["nonstreaming"]]
        p99 = [row[name]["p99_ms"] for row in results["nonstreaming"]]
        left.plot(levels, rps, "o-", color=_COLOURS[name], label=_LABELS[name])
        right.plot(levels, p50, "o-", color=_COLOURS[name], label=f"{_LABELS[name]} p50")
        right.plot(levels, p99, "x--", color=_COLOURS[name], label=f"{_LABELS[name]} p99")
    for axes in (left, right):
        axes.set_xscale("log", base=2)
        axes.set_xticks(levels, [str(level) for level in levels])
        axes.set_xlabel("concurrent connections")
        axes.grid(alpha=0.3)
    left.set_yscale("log")
    left.set_ylabel("requests/s (log)")
    left.set_title("non-streaming throughput")
    left.legend()
    right.set_yscale("log")
    right.set_ylabel("ms (log)")
    right.set_title("non-streaming latency")
    right.legend(fontsize=7)
    written.append(_save(figure, directory / f"{stem}-nonstreaming.png"))

    # 2. streaming: chunks/s and CPU per chunk, per case
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    cases = results["streaming"]
    labels = [f"{c['chunks']}x{c['delay_ms']:g}ms" for c in cases]
    width = 0.8 / max(len(names), 1)
    for index, name in enumerate(names):
        xs = [i + index * width for i in range(len(cases))]
        left.bar(
            xs,
            [c[name]["chunks_per_s"] or 0 for c in cases],
            width,
            color=_COLOURS[name],
            label=_LABELS[name],
        )
        if name != "direct":
            right.bar(
                xs,
                [c[name]["cpu_ms_per_chunk"] or 0 for c in cases],
                width,
                color=_COLOURS[name],
                label=_LABELS[name],
            )
    for axes in (left, right):
        axes.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(cases))], labels)
        axes.set_xlabel("chunks x inter-chunk delay")
        axes.grid(alpha=0.3, axis="y")
    left.set_yscale("log")
    left.set_ylabel("chunks/s relayed (log)")
    left.set_title("streaming throughput")
    right.axhline(0.05, color="black", linestyle=":", label="target 0.05")
    right.set_yscale("log")
    right.set_ylabel("proxy CPU ms per chunk (log)")
    right.set_title("streaming CPU per relayed chunk")
    left.legend()
    right.legend()
    written.append(_save(figure, directory / f"{stem}-streaming.png"))

    # 3. CPU per request and memory, the two proxies side by side
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    proxies = [n for n in names if n != "direct"]
    for index, name in enumerate(proxies):
        xs = [i + index * 0.4 for i in range(len(levels))]
        left.bar(
            xs,
            [row[name]["cpu_ms_per_request"] or 0 for row in results["nonstreaming"]],
            0.4,
            color=_COLOURS[name],
            label=_LABELS[name],
        )
    left.set_xticks([i + 0.2 for i in range(len(levels))], [f"c={level}" for level in levels])
    left.axhline(1.0, color="black", linestyle=":", label="target 1.0 ms")
    left.set_yscale("log")
    left.set_ylabel("proxy CPU ms per request (log)")
    left.set_title("non-streaming CPU per request")
    left.legend()
    memory = results.get("memory") or {}
    stages = ("idle_rss_mb", "warm_rss_mb", "after_rss_mb")
    for index, name in enumerate(proxies):
        if name not in memory:
            continue
        xs = [i + index * 0.4 for i in range(len(stages))]
        right.bar(
            xs, [memory[name][s] for s in stages], 0.4, color=_COLOURS[name], label=_LABELS[name]
        )
    right.set_xticks([i + 0.2 for i in range(len(stages))], ["idle", "warm", "after N requests"])
    right.axhline(80, color="black", linestyle=":", label="target 80 MB idle")
    right.set_ylabel("RSS MB")
    right.set_title("memory")
    right.legend()
    written.append(_save(figure, directory / f"{stem}-cpu-memory.png"))
    plt.close("all")
    return written


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return path
