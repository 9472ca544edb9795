"""A pool's writer lock: one process (one torchrun job) builds a pool at a time.

The lock is a file `.poe-writer.lock` in the pool folder, created with O_CREAT|O_EXCL (atomic on
local filesystems and on NFS v3+), holding who holds it: host, pid, start time, command. Its holder
touches it every HEARTBEAT_S seconds. A second writer either waits, saying who holds the lock, or
(`wait=False`, the tools' --no-wait) stops at once with one error line.

A lock is stale, and taken over, when its holder is gone:
  - same host: the holder's pid is no longer running;
  - any host: the file was not touched for STALE_AFTER_S seconds (a holder on another machine that
    died, or one stopped that long; this rule needs the hosts' clocks to agree within minutes).
Readers (Run_Service.py, Run_Table6.py evaluating pools) never take it: every file is written to a
temporary name and renamed into place, so they never see a half-written file.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from . import distributed
from .errors import PoEError

LOCK_NAME = ".poe-writer.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
POLL_S = 2.0


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class FolderLock:
    """An exclusive lock file in `folder`; `acquire()` / `release()`, or `with` (waits)."""

    def __init__(self, folder: str | Path, name: str = LOCK_NAME, *, stale_after: float = STALE_AFTER_S,
                 heartbeat: float = HEARTBEAT_S):
        self.folder, self.path = Path(folder), Path(folder) / name
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self.token = None
        self._stop = threading.Event()
        self._thread = None

    # -- who holds it -------------------------------------------------------------------------
    def holder(self) -> dict | None:
        """The holder's record, {} for a lock file being written or unreadable, None when free."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            record = json.loads(text)
        except ValueError:
            record = {}
        return {**record, "age_s": age} if isinstance(record, dict) else {"age_s": age}

    def stale(self, record: dict) -> str | None:
        """Why the lock is stale, or None while its holder may still be working."""
        if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) \
                and not _pid_running(record["pid"]):
            return f"its holder (pid {record['pid']}) is no longer running"
        if record.get("age_s", 0) > self.stale_after:
            return f"it was not refreshed for {record['age_s']:.0f} s (holder gone?)"
        return None

    @staticmethod
    def describe(record: dict) -> str:
        if not record.get("host"):
            return "another process"
        return (f"pid {record.get('pid')} on {record.get('host')} since {record.get('started', '?')}"
                + (f" ({record['command']})" if record.get("command") else ""))

    # -- taking and giving back -----------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lock if free (or stale: then it is taken over, saying so); never waits."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PoEError(f"cannot create {self.folder}: {exc.strerror}") from None
        record = self.holder()
        if record is not None:
            reason = self.stale(record)
            if reason is None or not self._remove_stale(record):
                return False
            print(f"note: took over the stale lock {self.path} of {self.describe(record)}: {reason}")
        token = uuid.uuid4().hex
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise PoEError(f"cannot write the lock {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        self.token = token
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="poe-lock-heartbeat", daemon=True)
        self._thread.start()
        return True

    def _remove_stale(self, record: dict) -> bool:
        """Move the stale file aside and delete it, unless someone took it over first (then False)."""
        aside = self.path.with_name(f"{self.path.name}.{os.getpid()}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # gone already: try to create it
        moved = json.loads(aside.read_text() or "{}") if aside.exists() else {}
        if moved.get("token") != record.get("token"):  # a live holder's file: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self.token is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        record = self.holder()
        if record and record.get("token") == self.token:  # never remove a lock we lost to a takeover
            self.path.unlink(missing_ok=True)
        self.token = None

    def attempt(self, wait: bool) -> str | None:
        """One try: None once taken, else the line saying whom we wait for; with wait=False a
        PoEError naming the holder instead."""
        if self.try_acquire():
            return None
        who = f"{self.folder} is being written by {self.describe(self.holder() or {})}"
        if not wait:
            raise PoEError(f"{who} (lock {self.path}); wait for it (run without --no-wait), or delete the lock "
                           "file if that process is gone")
        return f"waiting: {who}; this run continues when it is done (lock {self.path})"

    def acquire(self, wait: bool = True, poll: float = POLL_S) -> None:
        said = False
        while (line := self.attempt(wait)) is not None:
            if not said:
                print(line, flush=True)
                said = True
            time.sleep(poll)

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def writing(folders, wait: bool = True, poll: float = POLL_S):
    """Hold the writer locks of `folders` (a pool, its pretrained folder, ...) for the block. Taken in
    one global order (sorted paths), so two writers wanting the same folders cannot deadlock.

    Under torchrun rank 0 takes the locks for the whole job; the other ranks wait with it (a short
    collective per poll, so no collective timeout however long the wait) and stop with it on --no-wait."""
    unique = sorted({Path(f).resolve() for f in folders})
    locks = [FolderLock(f) for f in unique]
    main = distributed.world().is_main
    held = []
    try:
        for lock in locks:
            said = False
            while True:
                state = None
                if main:
                    try:
                        line = lock.attempt(wait)
                        state = ("held", None) if line is None else ("wait", line)
                    except PoEError as exc:
                        state = ("error", str(exc))
                state = distributed.broadcast(state)
                if state[0] == "held":
                    held.append(lock)
                    break
                if state[0] == "error":
                    raise PoEError(state[1])
                if not said:
                    print(state[1], flush=True)
                    said = True
                time.sleep(poll)
        yield
    finally:
        for lock in reversed(held):
            lock.release()
