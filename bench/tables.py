"""The results as one table: each figure for direct, arbstr-trio and LiteLLM, the ratios
of arbstr-trio's to the other two, and PASS/MISS against issue 6's targets.

A ratio is arbstr-trio's figure divided by the other's, whatever the direction of
"better": 0.5 under latency means half the latency, 10 under throughput ten times the
throughput. Added latency has no direct figure (direct adds nothing by definition).
"""

from __future__ import annotations

import math
from typing import Any

import attrs
from report import markdown

__all__ = ["Row", "build_rows", "render", "verdicts"]


Three = tuple[float | None, float | None, float | None]
"""direct, arbstr-trio, LiteLLM"""


@attrs.frozen
class Row:
    section: str
    metric: str
    values: Three
    target: str = ""
    passed: bool | None = None
    digits: int = 2

    @property
    def direct(self) -> float | None:
        return self.values[0]

    @property
    def arbstr(self) -> float | None:
        return self.values[1]

    @property
    def litellm(self) -> float | None:
        return self.values[2]


def _three(phase: dict[str, Any], key: str) -> Three:
    direct, arbstr, litellm = (_get(phase, name, key) for name in _NAMES)
    return direct, arbstr, litellm


_NAMES = ("direct", "arbstr", "litellm")


def _get(phase: dict[str, Any], name: str, key: str) -> float | None:
    value = phase.get(name, {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _check(value: float | None, ok: bool) -> bool | None:
    return None if value is None or math.isnan(value) else ok


def _nonstreaming_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for phase in results["nonstreaming"]:
        c = phase["concurrency"]
        section = f"non-streaming c={c}"
        p50, p99 = _three(phase, "p50_ms"), _three(phase, "p99_ms")
        if c == 1:
            added = _minus(p50[1], p50[0])
            rows.append(
                Row(
                    section,
                    "added latency p50 ms",
                    (None, added, _minus(p50[2], p50[0])),
                    "≤ 1.0",
                    _check(added, (added or 0) <= 1.0),
                    3,
                )
            )
            added99 = (None, _minus(p99[1], p99[0]), _minus(p99[2], p99[0]))
            rows.append(Row(section, "added latency p99 ms", added99, digits=3))
        rows.append(Row(section, "latency p50 ms", p50, digits=3))
        rows.append(Row(section, "latency p99 ms", p99, digits=3))
        rps = _three(phase, "throughput")
        target, passed = "", None
        if c == 64:
            target = "≥ 10x LiteLLM"
            if rps[1] is not None and rps[2]:
                passed = rps[1] >= 10 * rps[2]
        rows.append(Row(section, "throughput req/s", rps, target, passed, 0))
        cpu = _three(phase, "cpu_ms_per_request")
        target, passed = ("≤ 1.0", _check(cpu[1], (cpu[1] or 0) <= 1.0)) if c == 64 else ("", None)
        rows.append(Row(section, "CPU ms/request (direct: upstream's)", cpu, target, passed, 3))
    return rows


def _streaming_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for phase in results["streaming"]:
        section = (
            f"stream {phase['chunks']} chunks, {phase['delay_ms']:g} ms apart, "
            f"c={phase['concurrency']}"
        )
        ttfb = _three(phase, "ttfb_p50_ms")
        added = _minus(ttfb[1], ttfb[0])
        rows.append(Row(section, "TTFB p50 ms (c=1)", ttfb, digits=3))
        rows.append(
            Row(
                section,
                "added TTFB p50 ms",
                (None, added, _minus(ttfb[2], ttfb[0])),
                "≤ 2.0",
                _check(added, (added or 0) <= 2.0),
                3,
            )
        )
        chunks = _three(phase, "chunks_per_s")
        passed = None
        if chunks[1] is not None and chunks[2]:
            passed = chunks[1] >= 10 * chunks[2]
        rows.append(Row(section, "chunks/s relayed", chunks, "≥ 10x LiteLLM", passed, 0))
        cpu = _three(phase, "cpu_ms_per_chunk")
        rows.append(
            Row(
                section,
                "CPU ms/chunk (direct: upstream's)",
                cpu,
                "≤ 0.05",
                _check(cpu[1], (cpu[1] or 0) <= 0.05),
                4,
            )
        )
    return rows


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def _other_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    fail = results.get("failover")
    if fail:
        section = (
            f"failover: {fail['upstream_failure_percent']:g}% 503/429, c={fail['concurrency']}"
        )
        rates = _three(fail, "error_rate")
        errors = (_percent(rates[0]), _percent(rates[1]), _percent(rates[2]))
        rows.append(Row(section, "client-visible errors %", errors))
        rows.append(Row(section, "throughput req/s (2xx)", _three(fail, "throughput"), digits=0))
        rows.append(Row(section, "latency p99 ms", _three(fail, "p99_ms")))
    mem = results.get("memory")
    if mem:
        a_req = mem.get("arbstr", {}).get("requests", 0)
        l_req = mem.get("litellm", {}).get("requests", 0)
        section = f"memory: arbstr {a_req:,} req, LiteLLM {l_req:,} req, c={mem['concurrency']}"

        def pair(key: str) -> Three:
            return None, _get(mem, "arbstr", key), _get(mem, "litellm", key)

        idle = pair("idle_rss_mb")
        rows.append(
            Row(section, "RSS idle MB", idle, "≤ 80", _check(idle[1], (idle[1] or 0) <= 80), 1)
        )
        rows.append(Row(section, "RSS warm MB (before the soak)", pair("warm_rss_mb"), digits=1))
        rows.append(Row(section, "RSS after MB", pair("after_rss_mb"), digits=1))
        growth = pair("growth_percent")
        rows.append(
            Row(
                section,
                "RSS growth % over the soak",
                growth,
                "< 10",
                _check(growth[1], (growth[1] or 0) < 10),
            )
        )
        rows.append(Row(section, "RSS growth % from idle", pair("growth_from_idle_percent")))
    return rows


def build_rows(results: dict[str, Any]) -> list[Row]:
    return [*_nonstreaming_rows(results), *_streaming_rows(results), *_other_rows(results)]


def _fmt(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}x"


COLUMNS = (
    "phase",
    "figure",
    "direct",
    "arbstr-trio",
    "LiteLLM",
    "arbstr/direct",
    "arbstr/LiteLLM",
    "target",
    "",
)


def render(rows: list[Row], litellm_note: str = "") -> str:
    """The Markdown table; LiteLLM cells say "n/a" when it could not run (see the note)."""
    cells = []
    for row in rows:
        verdict = "" if row.passed is None else ("PASS" if row.passed else "MISS")
        cells.append(
            [
                row.section,
                row.metric,
                _fmt(row.direct, row.digits),
                _fmt(row.arbstr, row.digits),
                _fmt(row.litellm, row.digits) if not litellm_note else "unavailable",
                _ratio(row.arbstr, row.direct),
                _ratio(row.arbstr, row.litellm),
                row.target,
                verdict,
            ]
        )
    return markdown(COLUMNS, cells)


def verdicts(rows: list[Row]) -> list[dict[str, Any]]:
    """Every row that has a target, with its outcome, for the JSON and the summary."""
    return [
        {
            "phase": row.section,
            "figure": row.metric,
            "arbstr": row.arbstr,
            "litellm": row.litellm,
            "target": row.target,
            "result": "n/a" if row.passed is None else ("PASS" if row.passed else "MISS"),
        }
        for row in rows
        if row.target
    ]
