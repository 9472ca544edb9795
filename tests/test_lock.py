"""The pool's writer lock: one writer at a time, a second waits (or stops with --no-wait), a dead
holder's lock is taken over, and two writers started together leave one complete, loadable pool."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from helpers import ROOT, make_pool
from Demo import PROFILE
from poe.errors import PoEError
from poe.lock import FolderLock
from poe.pool import Pool


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant(folder, **record):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".poe-writer.lock"
    path.write_text(json.dumps({"token": "x", "started": "2026-01-01T00:00:00", **record}))
    return path


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    first = FolderLock(tmp_path)
    assert first.try_acquire()
    with pytest.raises(PoEError, match=f"pid {os.getpid()} on {socket.gethostname()}"):
        FolderLock(tmp_path).attempt(wait=False)
    line = FolderLock(tmp_path).attempt(wait=True)
    assert line.startswith("waiting: ") and f"pid {os.getpid()}" in line
    first.release()
    assert not (tmp_path / ".poe-writer.lock").exists()
    second = FolderLock(tmp_path)
    assert second.attempt(wait=False) is None
    second.release()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, capsys):
    plant(tmp_path, host=socket.gethostname(), pid=dead_pid())
    lock = FolderLock(tmp_path)
    assert lock.try_acquire()
    assert "took over the stale lock" in capsys.readouterr().out
    assert json.loads((tmp_path / ".poe-writer.lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_other_hosts_lock_is_stale_only_when_not_refreshed(tmp_path):
    path = plant(tmp_path, host="elsewhere", pid=1)
    assert not FolderLock(tmp_path).try_acquire()  # fresh: its holder may be working
    old = time.time() - 3600
    os.utime(path, (old, old))
    lock = FolderLock(tmp_path)
    assert lock.try_acquire()
    lock.release()


def test_holder_refreshes_the_lock_while_it_works(tmp_path):
    lock = FolderLock(tmp_path, heartbeat=0.05)
    assert lock.try_acquire()
    path = tmp_path / ".poe-writer.lock"
    os.utime(path, (0, 0))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 5
    lock.release()


def test_a_live_lock_of_another_users_process_is_not_taken_over(tmp_path, monkeypatch):
    """On this host, a holder whose pid we may not signal (another user's process) is alive."""
    path = plant(tmp_path, host=socket.gethostname(), pid=424242)
    kill = os.kill

    def kill_as_another_user(pid, sig):
        if pid == 424242:
            raise PermissionError(1, "Operation not permitted")
        return kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill_as_another_user)
    before = path.read_text()
    assert not FolderLock(tmp_path).try_acquire()
    with pytest.raises(PoEError, match="pid 424242"):
        FolderLock(tmp_path).attempt(wait=False)
    assert path.read_text() == before


# Each racer looks at the folder (free), then waits until both have looked, and only then creates the
# lock file: the interleaving in which only exclusive creation (O_EXCL) keeps the second one out.
RACER = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from poe.lock import FolderLock

ready, go = Path(sys.argv[2]), Path(sys.argv[3])
look = FolderLock.holder

def look_then_wait(self):
    record = look(self)
    (ready / str(os.getpid())).touch()
    while not go.exists():
        time.sleep(0.01)
    return record

FolderLock.holder = look_then_wait
print(json.dumps(FolderLock(sys.argv[1]).try_acquire()))
"""


@pytest.mark.slow  # subprocesses
def test_two_processes_racing_for_a_free_lock_get_it_once(tmp_path):
    ready, go, folder = tmp_path / "ready", tmp_path / "go", tmp_path / "pool"
    ready.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(ready), str(go), str(ROOT)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    end = time.time() + 300
    while len(list(ready.iterdir())) < 2 and time.time() < end and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    assert len(list(ready.iterdir())) == 2, "the racers never both looked at the lock"
    go.touch()
    won = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(won) == [False, True]
    holder = json.loads((folder / ".poe-writer.lock").read_text())
    assert holder["pid"] == procs[won.index(True)].pid


@pytest.fixture
def library_pool(tmp_path):
    return make_pool(tmp_path / "source", PROFILE).root


def writer(pool, source, log, *extra):
    argv = [sys.executable, str(ROOT / "Run_preprocessing.py"), "--dataset", "demo", "--db", str(pool),
            "--pretrained_db", str(pool.parent / "pre"), "--library_from", str(source), "--teacher",
            "library-student", "--tasks", "disks", "rings", "--epochs_expert", "1", "--cache_views", "1",
            "--amp", "none", "--threads", "1", *extra]
    return subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)


def wait_for(path, text, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        if text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} never said {text!r}: {path.read_text()}")


@pytest.mark.slow  # subprocesses
def test_two_writers_on_one_pool(tmp_path, library_pool):
    pool = tmp_path / "pool"
    held = FolderLock(pool)  # a writer that is busy: the two started below must wait for it
    assert held.try_acquire()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [writer(pool, library_pool, logs[0]), writer(pool, library_pool, logs[1])]
    refused = subprocess.run([sys.executable, str(ROOT / "Run_preprocessing.py"), "--dataset", "demo", "--db",
                              str(pool), "--pretrained_db", str(tmp_path / "pre"), "--no-wait"],
                             capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert f"pid {os.getpid()}" in lines[0] and "--no-wait" in lines[0]
    for log in logs:
        wait_for(log, f"waiting: {pool.resolve()} is being written by pid {os.getpid()}")
    held.release()
    codes = [p.wait(timeout=900) for p in procs]
    outs = [log.read_text() for log in logs]
    assert codes == [0, 0], outs
    # One of them trained the experts; the other, after waiting for it, found them done.
    trained = [o for o in outs if "experts (cached, joint) epoch 1/1" in o]
    skipped = [o for o in outs if "already in the pool: disks, rings" in o]
    assert len(trained) == 1 and len(skipped) == 1, outs
    loaded = Pool(pool, PROFILE)
    assert sorted(loaded.manifest()["experts"]) == ["disks", "rings"]
    for task in ("disks", "rings"):
        loaded.load_expert(task)
    assert not list(pool.rglob("*.tmp")) and not list(pool.rglob("*lock*"))
