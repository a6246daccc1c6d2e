"""``serve --workers N``: N processes serving one listening socket, and their supervisor.

One Trio process uses one core. Hypercorn's answer, kept here, is worker processes that
share a socket their parent bound, each accepting from it, so the kernel spreads the
connections. This parent binds the socket, starts N ``arbstr-trio serve --worker-fd``
children that inherit it, and passes signals on: SIGINT or SIGTERM stops them gracefully
(a second one at once), SIGHUP reloads them. One worker's admin change reaches the rest
the same way: it sends its supervisor SIGHUP (:func:`~arbstr_trio.reconfigure.tell_other_workers`).
A worker that dies while serving is replaced, unless workers keep dying as they start.

The children run in their own session, so a terminal's Ctrl-C reaches only the parent,
which stops each child once; and each child stops by itself if the parent disappears.

What each worker keeps to itself: breakers and rate-limit tracking, round robin and
latency averages, ``/metrics`` and the live feed (each shows its own worker), and the
spend that requests in flight hold. That last one would let N workers overspend a
budget N ways, so a configuration with budgets is refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

import trio

from arbstr_trio.cli.banner import announce
from arbstr_trio.config.models import Config, ListenAddress
from arbstr_trio.reconfigure import SUPERVISOR_PID_VARIABLE
from arbstr_trio.server import LISTEN_BACKLOG

__all__ = ["supervise", "watch_supervisor"]

log = logging.getLogger("arbstr_trio")

_RESTART_PAUSE_S = 1.0
_QUICK_EXIT_S = 5.0
"""A worker that exits sooner than this after starting has failed to start."""
_QUICK_EXITS_TO_GIVE_UP = 3
_EXIT_GRACE_S = 35.0
"""Past the graceful shutdown period: the request log's drain (30 s) and a margin."""
_SUPERVISOR_POLL_S = 1.0


class _WorkersKeepFailing(Exception):
    pass


def supervise(args: argparse.Namespace, config: Config) -> int:
    """Run ``args.workers`` workers of ``serve`` until a signal; the exit status."""
    # Budgets were refused when the config was loaded (ConfigSource.one_of_workers).
    try:
        listener = _bind(config.server.listen)
    except OSError as exc:
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        print(f"error: cannot serve on {config.server.listen}: {reason}", file=sys.stderr)
        return 1
    with listener:
        return trio.run(_supervise, args, config, listener)


def _bind(address: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address.host, address.port))
        # Listening before any worker runs: connections wait in the backlog meanwhile.
        listener.listen(LISTEN_BACKLOG)
        listener.set_inheritable(True)
    except BaseException:
        listener.close()
        raise
    return listener


def _worker_command(args: argparse.Namespace, fd: int) -> list[str]:
    command = [sys.executable, "-m", "arbstr_trio", "serve", "--worker-fd", str(fd)]
    if args.config:
        command += ["--config", args.config]
    if args.mock:
        command.append("--mock")
    return command


async def _supervise(args: argparse.Namespace, config: Config, listener: socket.socket) -> int:
    fd = listener.fileno()
    command = _worker_command(args, fd)
    environment = {**os.environ, SUPERVISOR_PID_VARIABLE: str(os.getpid())}
    workers: dict[int, trio.Process] = {}
    stopping = trio.Event()

    async def keep_worker(slot: int, task_status: trio.TaskStatus[None]) -> None:
        quick_exits = 0
        while True:
            if stopping.is_set():
                return
            process = await trio.lowlevel.open_process(
                command,
                pass_fds=(fd,),
                env=environment,
                start_new_session=True,
                preexec_fn=_block_sighup,
            )
            workers[slot] = process
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            began = trio.current_time()
            status = await process.wait()
            if stopping.is_set():
                return
            quick = trio.current_time() - began < _QUICK_EXIT_S
            quick_exits = quick_exits + 1 if quick else 0
            if quick_exits >= _QUICK_EXITS_TO_GIVE_UP:
                raise _WorkersKeepFailing(
                    f"worker {slot} exited with status {status} {quick_exits} times "
                    f"within {_QUICK_EXIT_S:.0f} s of starting"
                )
            log.error(
                "worker %d (pid %d) exited with status %d; starting another",
                slot,
                process.pid,
                status,
            )
            await trio.sleep(_RESTART_PAUSE_S)

    def signal_all(signum: int) -> None:
        for process in workers.values():
            if process.returncode is None:
                process.send_signal(signum)

    async def relay_signals(pool: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    signal_all(signal.SIGHUP)
                    continue
                if not stopping.is_set():
                    stopping.set()
                    grace_s = config.server.graceful_shutdown_ms / 1000 + _EXIT_GRACE_S
                    pool.cancel_scope.deadline = trio.current_time() + grace_s
                    signal_all(signal.SIGTERM)  # a worker's graceful stop
                else:
                    # A worker takes a repeated SIGTERM as the same request (systemd
                    # sends the whole unit one too); stopping at once is SIGKILL.
                    log.warning("stopping the workers at once")
                    signal_all(signal.SIGKILL)

    gave_up: str | None = None
    try:
        async with trio.open_nursery() as outer:
            pool_scope = None
            async with trio.open_nursery() as pool:
                pool_scope = pool.cancel_scope
                outer.start_soon(relay_signals, pool)
                for slot in range(args.workers):
                    await pool.start(keep_worker, slot)
                host, port = listener.getsockname()[:2]
                url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
                mocks = "embedded in each worker" if args.mock else None
                announce(url, config, mock_urls=mocks, workers=args.workers)
            outer.cancel_scope.cancel()
            if pool_scope.cancelled_caught:
                log.error("workers did not stop in time; killing them")
    except* _WorkersKeepFailing as group:
        gave_up = str(_first_leaf(group))
    finally:
        with trio.CancelScope(shield=True):
            await _stop(workers, kill=gave_up is None)
    if gave_up is not None:
        log.error("giving up: %s", gave_up)
        return 1
    return 0


def _block_sighup() -> None:
    """In a new worker, before it runs: SIGHUP held until it can reload (see
    :func:`~arbstr_trio.server.watch_reload`), not its default, which ends the process."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


def _first_leaf(group: BaseExceptionGroup[_WorkersKeepFailing]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _stop(workers: dict[int, trio.Process], *, kill: bool = False) -> None:
    """End every worker still running: SIGTERM and a wait, or with ``kill``, SIGKILL."""
    for process in workers.values():
        if process.returncode is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    with trio.move_on_after(_EXIT_GRACE_S):
        for process in workers.values():
            await process.wait()


async def watch_supervisor(supervisor_pid: int, shutdown: trio.Event) -> None:
    """In a worker: stop gracefully once the supervisor is gone (it was killed outright,
    so it cannot stop us itself). Linux says so on a pidfd; elsewhere it is polled."""
    try:
        pidfd = os.pidfd_open(supervisor_pid)
    except (AttributeError, OSError):
        while os.getppid() == supervisor_pid:  # noqa: ASYNC110 - no event to wait on here
            await trio.sleep(_SUPERVISOR_POLL_S)
    else:
        try:
            if os.getppid() == supervisor_pid:  # not gone before the pidfd was opened
                await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
    log.error("the supervisor (pid %d) is gone; stopping", supervisor_pid)
    shutdown.set()
