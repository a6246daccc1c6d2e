"""Where the running configuration comes from, and how it is replaced while serving.

A :class:`ConfigSource` is the config file plus its *admin overlay*: the changes made
through ``/v1/admin/`` (providers, chains and keys, by name), kept in a JSON file next
to the config file, ``<config>.admin.json``. At start, on ``SIGHUP`` and for every
admin change the same steps run: the file's TOML document, the overlay laid over it
(an entry replaces the file's table of the same name, or is added; ``null`` removes
it), and the whole document through the loader the file goes through, so an admin
change is checked exactly as the file is and reported with the same ``$.path`` lines.

JSON rather than TOML because the overlay is written by the proxy (``tomllib`` only
reads) and is read only by it. It holds secrets as they were given (a literal key, or
``${VAR}``), so it is created with mode 0600 and replaced atomically: written to a
temporary file in the same directory, fsynced, then renamed over the old one.

What a running proxy cannot take on without a restart ([server], [database],
[upstream]) is kept from the running configuration; a change there is logged.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import signal
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from arbstr_trio.config.load import ConfigError, LoadedConfig, parse_document, permission_warning
from arbstr_trio.config.models import Config
from arbstr_trio.errors import Unavailable
from arbstr_trio.runtime import Runtime

__all__ = [
    "OVERLAY_SUFFIX",
    "SECTIONS",
    "SUPERVISOR_PID_VARIABLE",
    "ConfigSource",
    "Overlay",
    "reload",
    "restart_only",
    "single_process_settings",
    "tell_other_workers",
]

log = logging.getLogger(__name__)

OVERLAY_SUFFIX = ".admin.json"
_LOCK_WAIT_S = 2.0
_LOCK_POLL_S = 0.002
SUPERVISOR_PID_VARIABLE = "ARBSTR_SUPERVISOR_PID"
"""Set in each worker of ``serve --workers`` to its supervisor's pid."""
SECTIONS = ("providers", "chains", "keys")
"""What the admin API changes: the config's arrays of named tables."""

Overlay = dict[str, dict[str, Any]]
"""Section -> entry name -> its table as given, or None where the entry was deleted."""


def empty_overlay() -> Overlay:
    return {section: {} for section in SECTIONS}


@attrs.define
class ConfigSource:
    """The config file (or, for the embedded mock config, its text) and its overlay."""

    path: Path | None
    text: str | None = None
    """The file's text as last loaded successfully (read from ``path`` by :meth:`load`)."""
    environ: Mapping[str, str] | None = None
    overlay: Overlay = attrs.field(factory=empty_overlay)
    label: str = "<config>"
    """What to call a source without a path in messages."""
    transform: Callable[[Config], Config] | None = None
    """Applied to every loaded config before it runs (``--mock`` points providers at mocks)."""
    one_of_workers: bool = False
    """Served by one of several processes (``serve --workers``), which forbids budgets."""

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else self.label

    @property
    def overlay_path(self) -> Path | None:
        return None if self.path is None else self.path.with_name(self.path.name + OVERLAY_SUFFIX)

    def load(self) -> LoadedConfig:
        """Read the file and its overlay afresh and check them; on success they become
        this source's own (on failure nothing changes and :class:`ConfigError` says why)."""
        text = self._read_text()
        overlay = self._read_overlay()
        loaded = self.check(overlay, text=text)
        warning = permission_warning(self.path) if self.path is not None else None
        if warning:
            loaded = attrs.evolve(loaded, warnings=(warning, *loaded.warnings))
        self.text, self.overlay = text, overlay
        return loaded

    def check(self, overlay: Overlay, *, text: str | None = None) -> LoadedConfig:
        """The configuration the file's text (by default, as last loaded) and ``overlay``
        make, checked by the loader; :class:`ConfigError` with every problem if not."""
        text = self.text if text is None else text
        assert text is not None, "load() first"
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(self.name, [f"TOML syntax error: {exc}"]) from None
        loaded = parse_document(merge(document, overlay), source=self.name, environ=self.environ)
        if self.one_of_workers:
            problems = single_process_settings(loaded.config)
            if problems:
                raise ConfigError(self.name, problems)
        return loaded

    @contextmanager
    def locked_overlay(self) -> Iterator[Overlay]:
        """The overlay as its file holds it now, for a change made under a lock.

        Workers of ``serve --workers`` share the file; without the lock, two changes
        made at once in two workers would each write the overlay without the other's.
        The lock (``flock`` on a file beside it) is held for a read, a check and an
        atomic write: milliseconds, during which this worker's event loop waits. It is
        taken synchronously, so that within one process a change stays one step with
        no await in it; another process's hold is waited out for at most
        :data:`_LOCK_WAIT_S`, then the change is refused (503) rather than hanging.
        """
        path = self.overlay_path
        if path is None:
            yield copy.deepcopy(self.overlay)
            return
        lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock_within(lock, _LOCK_WAIT_S)
            yield self._read_overlay()
        finally:
            os.close(lock)  # and with it, the lock

    def save_overlay(self, overlay: Overlay) -> None:
        """Write ``overlay`` atomically (0600) and make it this source's own."""
        target = self.overlay_path
        if target is not None:
            data = json.dumps(overlay, indent=2, sort_keys=True).encode() + b"\n"
            fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as file:  # mkstemp creates it 0600
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            _fsync_directory(target.parent)
        self.overlay = overlay

    def _read_text(self) -> str:
        if self.path is None:
            assert self.text is not None, "a source without a path has its text"
            return self.text
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(self.name, [f"cannot read the file: {exc.strerror or exc}"]) from None
        except UnicodeDecodeError:
            raise ConfigError(self.name, ["the file is not UTF-8 text"]) from None

    def _read_overlay(self) -> Overlay:
        path = self.overlay_path
        if path is None:
            return copy.deepcopy(self.overlay)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return empty_overlay()
        except (OSError, ValueError) as exc:
            raise ConfigError(str(path), [f"cannot read the admin overlay: {exc}"]) from None
        overlay = empty_overlay()
        problems: list[str] = []
        if not isinstance(document, dict):
            problems.append("$: must be an object")
            document = {}
        for section, entries in document.items():
            if section not in SECTIONS:
                problems.append(f"$.{section}: unknown key")
            elif not isinstance(entries, dict):
                problems.append(f"$.{section}: must be an object")
            else:
                for name, entry in entries.items():
                    if entry is not None and not isinstance(entry, dict):
                        problems.append(f"$.{section}[{name!r}]: must be an object or null")
                    else:
                        overlay[section][name] = entry
        if problems:
            raise ConfigError(str(path), problems)
        return overlay


def _lock_within(fd: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Unavailable(
                    "the admin overlay is being changed by another process; try again",
                    code="admin_busy",
                ) from None
            time.sleep(_LOCK_POLL_S)


def single_process_settings(config: Config) -> list[str]:
    """What ``config`` has that only a single process can honour: budgets, since the
    spend a request holds while in flight lives in its worker's memory alone."""
    return [
        f"$.keys[{index}]: budgets (max_sats_per_day, max_sats_per_month) need a single "
        "worker: run serve without --workers, or remove the key's limits"
        for index, key in enumerate(config.keys)
        if key.max_sats_per_day is not None or key.max_sats_per_month is not None
    ]


def tell_other_workers() -> None:
    """Under ``serve --workers``, have every worker reload, so an admin change made in
    one is in force in all: the supervisor relays SIGHUP to each (this one included,
    which reloads what it already runs)."""
    supervisor = os.environ.get(SUPERVISOR_PID_VARIABLE, "")
    if supervisor.isdigit() and int(supervisor) == os.getppid():
        os.kill(int(supervisor), signal.SIGHUP)


def merge(document: dict[str, Any], overlay: Overlay) -> dict[str, Any]:
    """``document`` with each overlay entry replacing, adding or removing a named table."""
    for section, entries in overlay.items():
        tables = document.get(section, [])
        if not isinstance(tables, list):
            continue  # the loader reports what it should have been
        tables = list(tables)
        for name, entry in entries.items():
            index = next(
                (i for i, t in enumerate(tables) if isinstance(t, dict) and t.get("name") == name),
                None,
            )
            if entry is None:
                if index is not None:
                    del tables[index]
            elif index is None:
                tables.append({**copy.deepcopy(entry), "name": name})
            else:
                tables[index] = {**copy.deepcopy(entry), "name": name}
        document[section] = tables
    return document


def restart_only(running: Config, loaded: Config) -> Config:
    """``loaded`` with what needs a restart kept as it runs."""
    return attrs.evolve(
        loaded, server=running.server, database=running.database, upstream=running.upstream
    )


def prepare(runtime: Runtime, source: ConfigSource, loaded: Config) -> Config:
    config = loaded if source.transform is None else source.transform(loaded)
    return restart_only(runtime.config, config)


def reload(runtime: Runtime) -> bool:
    """SIGHUP: the config file and its overlay read again and, if sound, applied.

    A file with problems is logged, every problem, and the running config kept.
    """
    source = runtime.source
    if source is None:
        log.warning("reload: the configuration did not come from a file; nothing to reload")
        return False
    previous_text = source.text
    try:
        loaded = source.load()
    except ConfigError as exc:
        log.error("reload failed; keeping the running configuration\n%s", exc.report())
        return False
    for warning in loaded.warnings:
        log.warning("%s", warning)
    if previous_text is not None:
        _log_restart_only(source, previous_text, loaded.config)
    runtime.apply(prepare(runtime, source, loaded.config))
    log.info("configuration reloaded from %s", source.name)
    return True


def _log_restart_only(source: ConfigSource, previous_text: str, config: Config) -> None:
    try:
        before = source.check(source.overlay, text=previous_text).config
    except ConfigError:
        return
    for section in ("server", "database", "upstream"):
        if getattr(before, section) != getattr(config, section):
            log.warning("reload: changes to [%s] take effect on restart", section)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
