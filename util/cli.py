"""How entry points report a user's mistake: one clear message, no traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable

from util.errors import UserError


def run_reporting_errors(body: Callable[[], None]) -> None:
    """Run ``body``; a ``UserError`` prints ``error: <message>`` (once, from rank 0) and exits 2."""
    try:
        body()
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
