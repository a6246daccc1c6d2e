"""The benchmark suite: arbstr-trio against the same upstream called directly and LiteLLM.

    make bench                      # or: python bench/run.py
    python bench/run.py --quick     # every phase shrunk: a smoke run of a few minutes
    python bench/run.py --help      # durations, request counts, phases to skip

Starts a fast mock upstream (bench/fast_upstream.py), arbstr-trio (``arbstr-trio serve``
with a generated config and a fresh request log, from a copy of the working tree taken
at the start) and the LiteLLM proxy (pinned, in bench/.venv-litellm, created on first
run), each its own process, and drives all three with the same load (wrk; streams from
a small counting client): non-streaming at several concurrencies, streams of 100 and
1000 chunks with and without pacing, 20% upstream failures, a memory soak; then
the request log's writer and readers (bench/writer.py, bench/stats.py). Prints one
table with every figure for direct / arbstr-trio / LiteLLM, the ratios, and PASS/MISS
against issue 6's targets, and writes ``bench/results/<date>.json``, ``<date>.md`` and
``<date>-*.png`` (``<date>-quick*`` for ``--quick``). ``--readme`` also puts the table
into README.md's Benchmarks section.

Everything runs on this machine, client included, so absolute figures move with the
machine and whatever else runs on it; ratios from one run are the result. CPU time per
request (from /proc) does not depend on how the cores are shared and is the steadiest.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
import phases
import tables
from procs import Server, rss_bytes
from report import machine

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def wrk_version() -> str:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (wrk.stdout or wrk.stderr).split("\n", 1)[0].split(" [", 1)[0].strip()


def settings_from(arguments: argparse.Namespace) -> phases.Settings:
    if arguments.quick:
        base = phases.Settings(
            seconds=2.0,
            warmup=0.5,
            concurrencies=(1, 16, 64, 256),
            ttfb_samples=100,
            paced_ttfb_samples=5,
            memory_requests=5_000,
            litellm_memory_requests=1_000,
            writer_records=10_000,
            stats_rows=50_000,
            stats_repeat=1,
        )
    else:
        base = phases.Settings()
    changes: dict[str, Any] = {}
    if arguments.seconds is not None:
        changes["seconds"] = arguments.seconds
    if arguments.requests is not None:
        changes["memory_requests"] = arguments.requests
    if arguments.litellm_requests is not None:
        changes["litellm_memory_requests"] = arguments.litellm_requests
    if arguments.stats_rows is not None:
        changes["stats_rows"] = arguments.stats_rows
    return attrs.evolve(base, **changes)


def headroom(results: dict[str, Any]) -> dict[str, Any]:
    """How much faster the upstream is than the fastest proxy: the check that the mock is
    never the bottleneck."""
    by_c = {row["concurrency"]: row for row in results["nonstreaming"]}
    row = by_c.get(64) or results["nonstreaming"][-1]
    direct = row["direct"]["throughput"]
    proxies = [row[n]["throughput"] for n in ("arbstr", "litellm") if n in row]
    stream = results["streaming"][0]
    stream_proxies = [stream[n]["chunks_per_s"] for n in ("arbstr", "litellm") if n in stream]
    return {
        "concurrency": row["concurrency"],
        "direct_rps": direct,
        "fastest_proxy_rps": max(proxies),
        "ratio": round(direct / max(max(proxies), 1e-9), 1),
        "direct_chunks_per_s": stream["direct"]["chunks_per_s"],
        "fastest_proxy_chunks_per_s": max(stream_proxies),
        "stream_ratio": round(stream["direct"]["chunks_per_s"] / max(max(stream_proxies), 1e-9), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shrink every phase: a smoke run")
    parser.add_argument("--seconds", type=float, help="measuring time per run (default 5)")
    parser.add_argument(
        "--requests", type=int, help="requests of the memory phase to arbstr-trio (default 100000)"
    )
    parser.add_argument(
        "--litellm-requests",
        type=int,
        help="requests of the memory phase to LiteLLM, which is far slower (default 2000)",
    )
    parser.add_argument(
        "--arbstr",
        metavar="PATH",
        help="the arbstr-trio executable to measure (default: a copy of this working tree's "
        "arbstr_trio package, taken at the start, run with this Python)",
    )
    parser.add_argument("--workers", type=int, default=1, help="arbstr-trio serve --workers N")
    parser.add_argument(
        "--no-scaling", action="store_true", help="skip the workers 1 vs 2 scaling table"
    )
    parser.add_argument("--no-litellm", action="store_true", help="do not run LiteLLM")
    parser.add_argument(
        "--skip-store", action="store_true", help="skip the writer and /v1/stats benchmarks"
    )
    parser.add_argument("--stats-rows", type=int, help="rows of the stats database (default 1M)")
    parser.add_argument(
        "--log-level", default="warn", help="arbstr-trio's [logging] level (default: warn)"
    )
    parser.add_argument("--out", default=str(BENCH_DIR / "results"), help="results directory")
    parser.add_argument(
        "--readme", action="store_true", help="put the table into README.md's Benchmarks section"
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="run nothing: print, plot (and with --readme, publish) a saved results file",
    )
    arguments = parser.parse_args(argv)
    if arguments.render:
        saved = json.loads(Path(arguments.render).read_text())
        write_outputs(saved, Path(arguments.out), readme=arguments.readme)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk (or brew install wrk)", file=sys.stderr)
        return 2
    settings = settings_from(arguments)
    began = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(wrk=wrk_version()),
        "settings": {
            "quick": arguments.quick,
            "arbstr_workers": arguments.workers,
            "arbstr_log_level": arguments.log_level,
            **json.loads(json.dumps(_settings_dict(settings))),
        },
    }
    print(f"machine: {results['machine']}")
    with tempfile.TemporaryDirectory(prefix="arbstr-bench-") as scratch:
        run_http_phases(Path(scratch), arguments, settings, results)
    if not arguments.skip_store:
        results["store"] = phases.store(settings)
    results["seconds"] = round(time.monotonic() - began, 1)
    write_outputs(results, Path(arguments.out), readme=arguments.readme)
    return 0


def _settings_dict(settings: phases.Settings) -> dict[str, Any]:
    return attrs.asdict(settings)


def run_http_phases(
    workdir: Path, arguments: argparse.Namespace, settings: phases.Settings, results: dict[str, Any]
) -> None:
    """Start the three servers, run every HTTP phase, stop them whatever happens."""
    servers: list[Server] = []
    try:
        upstream = peers.start_upstream(workdir)
        servers.append(upstream)
        if arguments.arbstr:
            command = peers.installed_arbstr(arguments.arbstr)
        else:
            command = peers.snapshot_arbstr(workdir)
        results["machine"]["arbstr_source"] = command.version
        supports_workers = peers.arbstr_supports_workers(command)
        workers = arguments.workers if supports_workers else 1
        if arguments.workers > 1 and not supports_workers:
            results["notes"] = ["arbstr-trio serve has no --workers yet: ran one worker"]
        arbstr = peers.start_arbstr(
            upstream, workdir, arbstr=command, workers=workers, log_level=arguments.log_level
        )
        servers.append(arbstr)
        litellm, reason = _litellm(arguments, upstream, workdir)
        if litellm is not None:
            servers.append(litellm)
        results["litellm"] = {
            "version": peers.LITELLM_VERSION,
            "available": litellm is not None,
            "reason": reason,
            "config": peers.litellm_config(upstream) if litellm is not None else "",
        }
        time.sleep(2.0)
        idle = {"arbstr": rss_bytes(arbstr.pid)}
        if litellm is not None:
            idle["litellm"] = rss_bytes(litellm.pid)
        targets = phases.targets_of(upstream, arbstr, litellm)
        print(f"phases start; arbstr-trio pid {arbstr.pid}, upstream {upstream.base_url}")
        results["nonstreaming"] = phases.nonstreaming(targets, upstream.base_url, settings)
        results["streaming"] = phases.streaming(targets, upstream.base_url, settings)
        results["failover"] = phases.failover(targets, upstream.base_url, settings)
        results["memory"] = phases.memory(targets, idle, settings)
        results["headroom"] = headroom(results)
        for server in servers[1:]:
            server.stop()
        if not arguments.no_scaling:
            if supports_workers:

                def start(count: int) -> Iterator[Server]:
                    server = peers.start_arbstr(
                        upstream,
                        workdir,
                        arbstr=command,
                        workers=count,
                        log_level=arguments.log_level,
                    )
                    try:
                        yield server
                    finally:
                        server.stop()

                results["workers"] = phases.workers_scaling(
                    start, upstream.base_url, settings, (1, 2)
                )
            else:
                results["workers"] = []
                results.setdefault("notes", []).append(
                    "workers scaling skipped: arbstr-trio serve has no --workers yet"
                )
    finally:
        for server in reversed(servers):
            server.stop()


def _litellm(
    arguments: argparse.Namespace, upstream: Server, workdir: Path
) -> tuple[Server | None, str]:
    if arguments.no_litellm:
        return None, "--no-litellm"
    executable, reason = peers.ensure_litellm()
    if executable is None:
        print(f"LiteLLM unavailable: {reason}")
        return None, reason
    try:
        return peers.start_litellm(upstream, workdir, executable), ""
    except RuntimeError as exc:
        print(f"LiteLLM did not start: {exc}")
        return None, f"did not start: {str(exc).splitlines()[0]}"


def summary_markdown(results: dict[str, Any]) -> str:
    """The table and the facts around it, as the README shows them."""
    rows = tables.build_rows(results)
    litellm = results.get("litellm", {})
    note = "" if litellm.get("available") else litellm.get("reason", "not run")
    m = results["machine"]
    lines = [
        f"Run {results['date']} on {m['cpu_model']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Python {m['python']}, Linux {m['kernel']}; "
        f"arbstr-trio {m['arbstr_commit']} (sources {m.get('arbstr_source', '?')}, "
        f"{results['settings']['arbstr_workers']} worker, "
        f"log level {results['settings']['arbstr_log_level']}), "
        f"LiteLLM {litellm.get('version')}"
        + (f" (unavailable: {note})" if note else "")
        + f", {m['wrk']}; {results['settings']['seconds']:g} s per measured run.",
        "",
        tables.render(rows, note),
    ]
    head = results.get("headroom")
    if head:
        lines += [
            "",
            f"Upstream headroom: direct {head['direct_rps']:,.0f} req/s at c={head['concurrency']}"
            f" vs the fastest proxy's {head['fastest_proxy_rps']:,.0f} ({head['ratio']}x); "
            f"streams {head['direct_chunks_per_s']:,.0f} vs "
            f"{head['fastest_proxy_chunks_per_s']:,.0f} chunks/s ({head['stream_ratio']}x).",
        ]
    if results.get("workers"):
        lines += ["", "arbstr-trio workers (non-streaming c=64; 100-chunk streams c=16):", ""]
        lines.append("| workers | req/s | p99 ms | CPU ms/req | chunks/s | CPU ms/chunk |")
        lines.append("|---|---|---|---|---|---|")
        for row in results["workers"]:
            cells = (
                row["workers"],
                _num(row["throughput"], 0),
                _num(row["p99_ms"], 1),
                _num(row["cpu_ms_per_request"], 3),
                _num(row["chunks_per_s"], 0),
                _num(row["cpu_ms_per_chunk"], 4),
            )
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines += _store_lines(results.get("store"))
    for note_line in results.get("notes", []):
        lines += ["", f"Note: {note_line}"]
    return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _store_lines(store: dict[str, Any] | None) -> list[str]:
    if not store:
        return []
    lines = ["", "Request log (no peer equivalent: LiteLLM ran without a database):", ""]
    writer = store.get("writer", {})
    if "rows_per_s" in writer:
        lines.append(
            f"- writer: {writer['rows_per_s']:,} rows/s sustained over {writer['rows']:,} records "
            f"({writer['rows_per_s_last_20pct']:,} rows/s over the last 20%), "
            f"{writer['filesystem']}"
        )
    else:
        lines.append(f"- writer: unavailable ({writer.get('unavailable')})")
    stats = store.get("stats", {})
    if "questions" in stats:
        lines += [
            "",
            f"`/v1/stats` and `/v1/requests` reads on {stats['rows']:,} rows "
            "(the proxy's own reader, no HTTP):",
            "",
            "| question | rows counted | median ms |",
            "|---|---|---|",
        ]
        lines += [
            f"| {q['question']} | {q['rows']:,} | {q['median_ms']:,.1f} |"
            for q in stats["questions"]
        ]
    else:
        lines.append(f"- stats: unavailable ({stats.get('unavailable')})")
    return lines


def write_outputs(results: dict[str, Any], out: Path, *, readme: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # a smoke run never overwrites the day's real results
    stem = results["date"][:10] + ("-quick" if results["settings"]["quick"] else "")
    rows = tables.build_rows(results)
    results["targets"] = tables.verdicts(rows)
    summary = summary_markdown(results)
    plots: list[str] = []
    try:
        plots = [path.name for path in __import__("plots").plot_all(results, out, stem)]
    except ImportError as exc:
        results.setdefault("notes", []).append(f"plots skipped: {exc}")
    results["plots"] = plots
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    images = "\n".join(f"![{name}](bench/results/{name})" for name in plots)
    (out / f"{stem}.md").write_text(summary + "\n")
    print()
    print(summary)
    print(f"\nwrote {out / (stem + '.json')}, {stem}.md and {len(plots)} plots in {out}")
    print(f"suite took {results['seconds']:.0f} s")
    if readme:
        update_readme(ROOT / "README.md", summary + ("\n\n" + images if images else ""))


def update_readme(path: Path, body: str) -> None:
    """Replace what lies between the bench markers in README.md, and nothing else."""
    text = path.read_text()
    if README_START not in text or README_END not in text:
        print(f"README.md has no {README_START} ... {README_END} markers: not updated")
        return
    before, rest = text.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    path.write_text(f"{before}{README_START}\n{body}\n{README_END}{after}")
    print("README.md Benchmarks section updated")


if __name__ == "__main__":
    sys.exit(main())
