"""Directory locks: one writer, a clear error for the second, safe takeover of a dead holder's lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from dinosae.io.lock import LOCK_NAME, DirectoryLock, DirectoryLockedError


def _holder(directory, **fields):
    """A lock file as another holder would have written it."""
    record = {"token": "other", "host": "elsewhere", "boot_id": "x", "pid": 1, "slurm_job_id": None,
              "slurm_restart": 0, "command": "dinosae train ae", "started": time.time(), **fields}
    (directory / LOCK_NAME).write_text(json.dumps(record))


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dinosae.io.lock import DirectoryLock; "
                               f"DirectoryLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryLockedError, match=f"pid {holder.pid} on"):
            DirectoryLock(tmp_path, "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    with DirectoryLock(tmp_path, "run") as lock:  # its process is gone: the lock is stale on this host
        assert lock.took_over["pid"] == holder.pid and "has ended" in lock.took_over["reason"]


def test_a_lock_from_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
    _holder(tmp_path)
    with pytest.raises(DirectoryLockedError, match="elsewhere"):
        DirectoryLock(tmp_path, stale_after=60).acquire()
    old = time.time() - 120
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with DirectoryLock(tmp_path, stale_after=60) as lock:
        assert "heartbeat" in lock.took_over["reason"]


def test_the_holder_keeps_its_heartbeat_fresh(tmp_path):
    with DirectoryLock(tmp_path, heartbeat=0.05):
        old = time.time() - 1000
        os.utime(tmp_path / LOCK_NAME, (old, old))
        deadline = time.monotonic() + 30  # a loaded CI machine may hold the heartbeat's thread back a while
        while (tmp_path / LOCK_NAME).stat().st_mtime < old + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.time() - (tmp_path / LOCK_NAME).stat().st_mtime < 60
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_requeued_slurm_job_takes_over_its_earlier_self(tmp_path, monkeypatch):
    _holder(tmp_path, slurm_job_id="4242", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with DirectoryLock(tmp_path) as lock:
        assert "requeue" in lock.took_over["reason"]
    _holder(tmp_path, slurm_job_id="4243", slurm_restart=0)  # another job of the same user: no
    with pytest.raises(DirectoryLockedError, match="SLURM job 4243"):
        DirectoryLock(tmp_path).acquire()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    lock = DirectoryLock(tmp_path).acquire()
    lock.release()
    _holder(tmp_path)
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()


def _race(directory, results):
    try:
        lock = DirectoryLock(directory, stale_after=60).acquire()
    except DirectoryLockedError:
        results.put("refused")
        return
    results.put("won")
    time.sleep(1.0)
    lock.release()


def test_racing_takers_of_a_stale_lock_leave_exactly_one_holder(tmp_path):
    _holder(tmp_path)
    old = time.time() - 600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    racers = [context.Process(target=_race, args=(tmp_path, results)) for _ in range(6)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    outcomes = sorted(results.get() for _ in racers)
    assert outcomes == ["refused"] * 5 + ["won"]


def _aged(path, seconds):
    when = time.time() - seconds
    os.utime(path, (when, when), follow_symlinks=False)


@pytest.mark.parametrize("make", [
    pytest.param(lambda path: path.write_bytes(b"\xff\xfe\x00 not utf-8"), id="not UTF-8"),
    pytest.param(lambda path: path.write_text("[1, 2]"), id="not a mapping"),
    pytest.param(lambda path: path.write_text("[" * 100_000), id="deeply nested"),
    pytest.param(lambda path: os.symlink("/nonexistent/lock", path), id="a dangling symlink"),
])
def test_garbage_locks_are_taken_over_once_stale_as_the_message_promises(tmp_path, make):
    make(tmp_path / LOCK_NAME)
    with pytest.raises(DirectoryLockedError, match=r"if no process writes it, delete that file") as error:
        DirectoryLock(tmp_path, "run", stale_after=60).acquire()
    assert "taken over 60 s after its last heartbeat" in str(error.value)
    _aged(tmp_path / LOCK_NAME, 120)
    lock = DirectoryLock(tmp_path, "run", stale_after=60).acquire()
    assert lock.took_over is not None and "ago" in lock.took_over["reason"]
    lock.release()


@pytest.mark.parametrize("fields", [dict(pid=-1, host="here"), dict(pid=2**40, host="here"), dict(pid="12"),
                                    dict(started="soon"), dict(slurm_restart="x", slurm_job_id="7")],
                         ids=["pid -1", "pid 2^40", "pid a string", "started not a time", "restart not a count"])
def test_holders_with_impossible_fields_are_judged_by_their_heartbeat(tmp_path, fields, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    if fields.get("host") == "here":  # this host and boot: the pid alone would decide, if it were a pid
        import socket

        from dinosae.io.lock import _boot_id

        fields = {**fields, "host": socket.gethostname(), "boot_id": _boot_id()}
    _holder(tmp_path, **fields)
    with pytest.raises(DirectoryLockedError, match="is being written by"):
        DirectoryLock(tmp_path, "run", stale_after=60).acquire()
    _aged(tmp_path / LOCK_NAME, 120)
    DirectoryLock(tmp_path, "run", stale_after=60).acquire().release()


def test_a_heartbeat_far_in_the_future_is_garbage(tmp_path):
    _holder(tmp_path)
    _aged(tmp_path / LOCK_NAME, -30)  # a little skew between hosts' clocks: a live holder
    with pytest.raises(DirectoryLockedError):
        DirectoryLock(tmp_path, "run", stale_after=60).acquire()
    _aged(tmp_path / LOCK_NAME, -3600)
    lock = DirectoryLock(tmp_path, "run", stale_after=60).acquire()
    assert "in the future" in lock.took_over["reason"]
    lock.release()
