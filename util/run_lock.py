"""One writer per run: a lock file in ``checkpoints/<name>/`` held for a training run's life.

Two training runs on one folder would overwrite each other's checkpoints and interleave their
logs, and a run's crash recovery would delete the other's half-written files. The first run
takes ``train.lock``; a second one stops at once with a line naming the PID and host that hold
it. Readers (test.py, evaluation) take no lock: they never change the folder.

Mutual exclusion comes from ``fcntl.flock`` on the open lock file, which the kernel drops when
the holder dies, however it dies (kill -9, node reboot with a local disk). The file also says who
holds it (PID, host, start time, command) for the message. Where a file system offers no flock
(some Lustre mounts), the PID and host decide: a lock of a dead process on this host is stale
and taken over; one held from another host is refused (delete the file if that job is gone).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import weakref
from typing import Any, Dict, Optional

from util.errors import UserError

LOCK_NAME = "train.lock"


class RunLocked(UserError):
    """Another live training run holds the folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _close_quietly(fd: int) -> None:
    _HELD.discard(fd)
    try:
        os.close(fd)
    except OSError:
        pass


# Lock descriptors this process holds. A forked child (a DataLoader worker) gets copies that
# would keep the flock alive after the run released it; the child closes its copies at once
# (closing a copy, unlike LOCK_UN, leaves the parent's lock in place).
_HELD: set = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _describe(holder: Dict[str, Any]) -> str:
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {when})"


class RunLock:
    """``with RunLock(folder): ...`` or ``acquire()`` / ``release()``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: Optional[int] = None
        self.took_over: Optional[Dict[str, Any]] = None  # the stale holder replaced, for the log

    def _read_holder(self) -> Dict[str, Any]:
        try:
            with open(self.path) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: Dict[str, Any]) -> RunLocked:
        return RunLocked(
            f"{self.folder} is in use by another training run: {_describe(holder)}. Wait for it "
            "to finish, stop it, or train under another --name; test.py and scripts/evaluate.py "
            f"may read the folder meanwhile. If that run is gone for good, delete {self.path}")

    def acquire(self) -> "RunLock":
        from util.checkpoint import write_error

        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_error(self.folder, e) from None
        try:
            previous = self._lock(fd)
            os.ftruncate(fd, 0)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                      "command": " ".join(sys.argv)}
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        if previous and previous.get("pid") not in (None, os.getpid()):
            self.took_over = previous
        self._fd = fd
        _HELD.add(fd)
        # a holder dropped without release() (an embedding script, a test) still frees the lock
        self._finalizer = weakref.finalize(self, _close_quietly, fd)
        return self

    def _lock(self, fd: int) -> Dict[str, Any]:
        """Take the lock on ``fd``; returns the previous holder's record (a finished or dead run)."""
        holder = self._read_holder()
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return holder
        except (BlockingIOError, PermissionError):
            raise self._refuse(self._read_holder()) from None
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise self._refuse(self._read_holder()) from None
            # no flock on this file system: decide by PID and host
        except ImportError:
            pass
        if holder.get("pid") and holder.get("pid") != os.getpid():
            if holder.get("host") != socket.gethostname() or _pid_alive(int(holder["pid"])):
                raise self._refuse(holder)
        return holder

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # a finished run leaves no holder to report
        except OSError:
            pass
        self._finalizer.detach()
        _close_quietly(self._fd)  # drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
