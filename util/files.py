"""File-system helpers shared by the writers of checkpoints, images and pages."""
from __future__ import annotations

import os


def fsync_dir(folder: str) -> None:
    """Make a rename inside ``folder`` durable (fsync of the directory); not possible on every
    file system, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
