"""Processes under test: starting them, waiting until they answer, and reading /proc.

CPU time and RSS are read for a process *and all its live descendants* (Hypercorn's
``--workers`` and any helper a peer spawns are children): ``cutime``/``cstime`` only
count children already waited for, so the tree is walked instead. /proc figures are
per process, unaffected by what else runs on the machine, which makes CPU time per
request the steadiest figure a shared 2-core machine can give.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

__all__ = [
    "Server",
    "cpu_seconds",
    "free_port",
    "rss_bytes",
    "start_server",
    "tree",
    "wait_http",
]

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A port free right now; passed explicitly so that multi-worker servers share it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    children = _children()
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``'s tree (reaped children's included)."""
    total = 0
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat; 11-14 after the name
        total += sum(int(value) for value in fields[11:15])
    return total / _TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``'s tree, from /proc/<pid>/statm."""
    total = 0
    for member in tree(pid):
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * _PAGE
        except OSError:
            continue
    return total


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``GET url`` until it answers 2xx; raise with the reason after ``timeout``."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before answering {url}")
        connection = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            connection.request("GET", "/" + path)
            status = connection.getresponse().status
            if 200 <= status < 300:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        finally:
            connection.close()
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s: {last}")


@attrs.define
class Server:
    """A process we started, its base URL, and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL to the whole process group after ``grace`` seconds."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_server(
    name: str,
    command: Sequence[str],
    base_url: str,
    ready_url: str,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cwd: str | None = None,
) -> Server:
    """Start ``command`` in its own process group (so stopping it stops its workers too)
    and return once ``ready_url`` answers."""
    log = log_path.open("wb")
    process = subprocess.Popen(
        list(command),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        cwd=cwd,
    )
    log.close()
    server = Server(name=name, process=process, base_url=base_url, log_path=log_path)
    try:
        wait_http(ready_url, timeout, process)
    except RuntimeError as exc:
        server.stop(2)
        raise RuntimeError(f"{name}: {exc}\n{server.log_tail()}") from exc
    return server
