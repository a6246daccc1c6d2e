"""What the proxy adds: the same mock provider, called directly and through arbstr-trio.

    python bench/overhead.py [--seconds 5] [--json results.json]

Starts one mock provider (``arbstr-trio mock-upstream``) and one proxy in front of it
(``arbstr-trio serve``), each its own process, then drives both with the same load
from this process: non-streaming requests and 100-chunk streams, at concurrency 1
and 64. Prints latency, throughput and the proxy's CPU time per request (read from
/proc, steadier than throughput on a shared machine), and the ratios to direct.

All three processes share this machine's cores, so absolute figures move with what
else runs; the ratios, measured in one run against the same mock, are the result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_request, run_load, summarise
from procs import cpu_seconds
from report import machine, markdown

CLI = [sys.executable, "-m", "arbstr_trio"]
CHAT: dict[str, object] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say something short."}],
}
SCENARIOS = [
    ("json", 1, {"x-mock": "chunks=16"}),
    ("json", 64, {"x-mock": "chunks=16"}),
    ("stream100", 1, {"x-mock": "chunks=100"}),
    ("stream100", 64, {"x-mock": "chunks=100"}),
]


async def start(command: list[str], marker: bytes) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(20):
        while marker not in seen or not seen.split(marker, 1)[1].count(b"\n"):
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"{command} exited: {seen!r}")
            seen += chunk
    return process, seen.split(marker, 1)[1].split(b"\n", 1)[0].decode().strip()


async def measure(
    url: str,
    scenario: str,
    concurrency: int,
    headers: dict[str, str],
    seconds: float,
    pid: int | None,
) -> dict[str, Any]:
    body = dict(CHAT, stream=True) if scenario.startswith("stream") else CHAT
    host, port, payload = build_request(url, body, headers)
    await run_load(
        host, port, payload, concurrency=concurrency, seconds=min(1.0, seconds / 4)
    )  # warm up
    cpu_before = cpu_seconds(pid) if pid else 0.0
    samples, elapsed = await run_load(host, port, payload, concurrency=concurrency, seconds=seconds)
    summary = summarise(samples, elapsed).row()
    if pid:
        cpu = cpu_seconds(pid) - cpu_before
        ok = summary["requests"] - summary["errors"]
        summary["proxy_cpu_ms_per_request"] = round(cpu * 1000 / max(ok, 1), 3)
        events = summary["events_per_s"] * elapsed
        summary["proxy_cpu_ms_per_event"] = round(cpu * 1000 / max(events, 1), 4)
    return summary


async def main(seconds: float, json_path: str | None, log_level: str) -> None:
    mock, mock_url = await start(
        [*CLI, "mock-upstream", "-l", "127.0.0.1:0", "--models", "gpt-4o-mini"], b"listening on "
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f'[[providers]]\nname = "mock"\nurl = "{mock_url}"\nmodels = ["gpt-4o-mini"]\n'
            f'input_rate = 150\noutput_rate = 600\n\n[logging]\nlevel = "{log_level}"\n'
        )
        config.chmod(0o600)
        proxy, proxy_url = await start(
            [*CLI, "serve", "-c", str(config), "-l", "127.0.0.1:0"], b"listening on "
        )
        results: list[dict[str, Any]] = []
        try:
            for scenario, concurrency, headers in SCENARIOS:
                direct = await measure(mock_url, scenario, concurrency, headers, seconds, None)
                through = await measure(
                    proxy_url + "/v1", scenario, concurrency, headers, seconds, proxy.pid
                )
                results.append(
                    {
                        "scenario": scenario,
                        "concurrency": concurrency,
                        "direct": direct,
                        "proxy": through,
                    }
                )
        finally:
            for process in (proxy, mock):
                process.terminate()
                await process.wait()
    print(markdown_table(results))
    errors = sum(row["direct"]["errors"] + row["proxy"]["errors"] for row in results)
    print(f"\nnon-200 answers: {errors}; machine: {machine()}")
    if json_path:
        document = {"machine": machine(), "seconds": seconds, "log_level": log_level}
        document["results"] = results
        await trio.Path(json_path).write_text(json.dumps(document, indent=2))


COLUMNS = (
    "scenario",
    "conc",
    "p50 ms direct / proxy",
    "added p50 ms",
    "p99 ms direct / proxy",
    "req/s direct / proxy",
    "ratio",
    "added TTFB ms",
    "chunks/s via proxy",
    "proxy CPU ms/req",
    "proxy CPU ms/chunk",
)


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The table as Markdown, to paste into the README as it is."""
    rows = []
    for row in results:
        d, p = row["direct"], row["proxy"]
        streaming = row["scenario"].startswith("stream")
        cells = [
            row["scenario"],
            str(row["concurrency"]),
            f"{d['p50_ms']:.2f} / {p['p50_ms']:.2f}",
            f"{p['p50_ms'] - d['p50_ms']:.2f}",
            f"{d['p99_ms']:.1f} / {p['p99_ms']:.1f}",
            f"{d['throughput']:.0f} / {p['throughput']:.0f}",
            f"{p['throughput'] / max(d['throughput'], 1):.2f}",
            f"{p['ttfb_p50_ms'] - d['ttfb_p50_ms']:.2f}" if streaming else "",
            f"{p['events_per_s']:.0f}" if streaming else "",
            f"{p['proxy_cpu_ms_per_request']:.3f}",
            f"{p['proxy_cpu_ms_per_event']:.4f}" if streaming else "",
        ]
        rows.append(cells)
    return markdown(COLUMNS, rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measuring time per run (default: %(default)s)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--log-level", default="warn", help="the proxy's [logging] level (default: %(default)s)"
    )
    arguments = parser.parse_args()
    trio.run(main, arguments.seconds, arguments.json, arguments.log_level)
