"""How entry points report a user's mistake: one clear message, no traceback."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import sys
from typing import Any, Callable, Dict, Optional

from util.errors import UserError

# OS errors a user fixes (permissions, space, a missing folder): one line, not a traceback.
USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                  errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) arrived where no loop can stop cleanly (start-up, test.py): the
    entry point exits with one line. A BaseException, like KeyboardInterrupt, so that ordinary
    ``except Exception`` blocks don't swallow it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def install_interrupt_handlers() -> Dict[int, object]:
    """SIGTERM / SIGINT raise :class:`Interrupted` (the training loop swaps in its own handler
    that finishes the iteration and saves). Returns the previous handlers."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, _raise_interrupted)
        except ValueError:  # not the main thread: leave the defaults
            pass
    return previous


_WORKER_HEADER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback")


def unwrap_worker_message(message: str, error_name: str) -> str:
    """DataLoader re-raises a worker's exception as ``Caught X in DataLoader worker process N.
    Original Traceback ...``: keep only the original message (the part after the last
    ``X: `` line of the traceback)."""
    if not _WORKER_HEADER.match(message):
        return message
    marker = re.compile(rf"^(?:[\w.]+\.)?{re.escape(error_name)}: ", re.MULTILINE)
    found = list(marker.finditer(message))
    return message[found[-1].end():].strip() if found else message


def _report(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr, flush=True)


def run_reporting_errors(body: Callable[[], None],
                         interrupted: Optional[Callable[[str], int]] = None) -> None:
    """Run ``body``; a ``UserError`` prints ``error: <message>`` (once, from rank 0) and exits 2.

    Also one line, no traceback, for: OS errors a user fixes (read-only folder, disk full) and
    SIGTERM / Ctrl-C while ``body`` runs. ``interrupted(signal_name)`` prints what that means for
    this entry point and returns the exit status (default: 128 + the signal number).
    """
    previous = install_interrupt_handlers()
    try:
        body()
    except UserError as e:
        _report(unwrap_worker_message(str(e), type(e).__name__))
        raise SystemExit(2) from None
    except OSError as e:
        if e.errno not in USER_OS_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _report(f"{where}{e.strerror or e}. Check the path, its permissions and free disk space")
        raise SystemExit(2) from None
    except (Interrupted, KeyboardInterrupt) as e:
        name = e.signal_name if isinstance(e, Interrupted) else "SIGINT"
        if interrupted is not None:
            status = interrupted(name)
        else:
            if os.environ.get("RANK", "0") == "0":
                print(f"interrupted by {name}; stopped without finishing", file=sys.stderr, flush=True)
            status = 128 + int(signal.Signals[name])
        raise SystemExit(status) from None
    finally:
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass


def run_with_summary(make_summary: Callable[[], Dict[str, Any]],
                     describe: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """A script's ``main``: ``make_summary()`` under ``run_reporting_errors``; ``describe`` prints
    its human-readable lines, then the summary goes out as one JSON line (what tools parse).
    Returns the summary (empty when the script stopped with an error)."""
    result: Dict[str, Any] = {}

    def body() -> None:
        summary = make_summary()
        if describe is not None:
            describe(summary)
        print(json.dumps(summary), flush=True)
        result.update(summary)

    run_reporting_errors(body)
    return result
