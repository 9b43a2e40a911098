"""Helpers shared by the ``scripts/compare_official_*.py`` scripts, which run an official code
base (SPADE, pix2pixHD, ASAPNet, pix2pix) beside ours and compare what the two produce.

One place for:

* :func:`check_official`: is ``--official`` a checkout of the expected project?
* :func:`add_official_options`, :func:`parse_configs` and :func:`work_folder`: the options
  the scripts share (``--official``, ``--official_pythonpath``, ``--work``, ``--configs``,
  ``--python``);
* :func:`replace_in_copy`: apply a script's text patches to its copy of the official code;
* :func:`child_env` and :func:`run`: one child process with its own thread count and
  PYTHONPATH, its output in a log file, a failure as a one-line :class:`UserError`;
* :func:`png_pairs`, :func:`compare_pngs`, :func:`add_difference`: the 8-bit image comparison,
  with one result format (:func:`empty_comparison`) for every script.

What differs between the official code bases (what to patch in their copy, data layouts,
flags, tables) stays in each script.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from util.errors import OptionError, UserError

# (name, official PNG, our PNG or None when ours has no such image)
ImagePair = Tuple[str, str, Optional[str]]


def check_official(path: Optional[str], project: str, source: str, files: Sequence[str],
                   option: str = "--official") -> str:
    """The absolute path of a checkout of ``project`` (cloned from ``source``) holding all of
    ``files``, or an :class:`OptionError` naming ``option`` and what to give instead."""
    if not path:
        raise OptionError(f"{option}: give the folder of a checkout of {project} "
                          f"(git clone of {source})")
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise OptionError(f"{option} {path}: no such folder; give a checkout of {project} ({source})")
    missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if missing:
        article = "an" if project[:1].lower() in "aeiou" else "a"
        raise OptionError(f"{option} {path}: not {article} {project} checkout (no {', '.join(missing)}); "
                          f"give the folder that holds its {files[0]}")
    return root


def replace_in_copy(official: str, copy: str, patches: Iterable[Tuple[str, str, str]], doc: str) -> None:
    """Apply ``(file, text, replacement)`` patches to the files of ``copy`` (a copy of the
    checkout ``official``; the checkout itself is never changed). Every text must occur: a
    patch that silently does nothing would compare another program than the one documented
    in ``doc``."""
    for rel, old, new in patches:
        path = os.path.join(copy, rel)
        with open(path) as f:
            text = f.read()
        if old not in text:
            raise UserError(f"--official {official}: {rel} has no {old!r}; give a checkout of the "
                            f"commit the CPU patch was written for (see {doc})")
        with open(path, "w") as f:
            f.write(text.replace(old, new))


def add_official_options(p: argparse.ArgumentParser, official_help: str, pythonpath_help: str,
                         configs: Sequence[str], default_configs: Optional[str] = None) -> None:
    """Add ``--official``, ``--official_pythonpath``, ``--work``, ``--configs`` (choices
    ``configs``, default ``default_configs`` or all of them) and ``--python`` to ``p``."""
    p.add_argument("--official", help=official_help)
    p.add_argument("--official_pythonpath", default=None, help=pythonpath_help)
    p.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    p.add_argument("--configs", default=default_configs or ",".join(configs),
                   help="comma-separated, from " + ", ".join(configs))
    p.add_argument("--python", default=sys.executable, help="interpreter for both code bases")


def parse_configs(value: str, known: Iterable[str]) -> List[str]:
    """The comma-separated ``--configs`` value as a list, each one of ``known``."""
    known = list(known)
    configs = [c for c in value.split(",") if c]
    unknown = [c for c in configs if c not in known]
    if unknown or not configs:
        what = f"unknown configuration {', '.join(map(repr, unknown))}" if unknown else "none given"
        raise OptionError(f"--configs: {what}; use a comma-separated subset of {', '.join(known)}")
    return configs


def work_folder(path: Optional[str], prefix: str) -> str:
    """``--work`` as an absolute, existing folder; without it a new temporary one."""
    folder = os.path.abspath(path) if path else tempfile.mkdtemp(prefix=prefix)
    os.makedirs(folder, exist_ok=True)
    return folder


def child_env(pythonpath: Union[None, str, Sequence[str]] = None,
              threads: Optional[int] = None) -> Dict[str, str]:
    """The environment of a child process.

    PYTHONPATH is exactly ``pythonpath`` (a folder or a list of them) or unset: packages that
    only the official code needs must not leak into our runs, nor ours into theirs.
    ``threads`` sets OMP_NUM_THREADS and MKL_NUM_THREADS; without it the caller's values are
    kept (OMP_NUM_THREADS 2 where unset, so that both code bases run with the same count).
    """
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if isinstance(pythonpath, str):
        pythonpath = [pythonpath] if pythonpath else []
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    else:
        env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _last_line(log: str) -> str:
    """The last non-empty line of ``log`` (a traceback ends with the exception), shortened."""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f.read()[-20000:].splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run(cmd: Sequence[str], cwd: str, env: Dict[str, str], log: str) -> Dict[str, float]:
    """Run one child to the end, its output (stdout and stderr) into ``log``.

    Returns its wall seconds, CPU seconds and peak RSS in MiB (``os.wait4``: the child's own
    figures, not this process's). A failure raises a one-line :class:`UserError` with the last
    line of the log (where a traceback names the error) and where the whole log is.
    """
    cmd = [str(c) for c in cmd]
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if proc.returncode != 0:
        # the first words name the program (a -c script squeezed onto the line); the full
        # command line can be pages of flags
        shown = " ".join(" ".join(cmd[:3]).split())
        shown = (shown[:200] + " ..." if len(shown) > 200 else shown) + (" ..." if len(cmd) > 3 else "")
        last = _last_line(log)
        raise UserError(f"{shown} (in {cwd}) failed with exit code {proc.returncode}"
                        + (f": {last}" if last else "") + f"; the whole output is in {log}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024.0}  # Linux reports KiB


def png_pairs(official_dir: str, our_dir: str,
              key: Optional[Callable[[str], str]] = None) -> List[ImagePair]:
    """The PNGs of ``official_dir`` (sorted), each with the PNG of ``our_dir`` whose name has
    the same ``key`` (default: the same file name), or None where ours has none."""
    key = key or (lambda name: name)
    ours = {}
    if os.path.isdir(our_dir):
        ours = {key(n): os.path.join(our_dir, n) for n in sorted(os.listdir(our_dir)) if n.endswith(".png")}
    names = sorted(n for n in os.listdir(official_dir) if n.endswith(".png"))
    return [(key(n), os.path.join(official_dir, n), ours.get(key(n))) for n in names]


def empty_comparison() -> Dict[str, object]:
    """The result format of every image comparison.

    images: official images looked at; identical: those equal to ours in every value;
    missing: names without a comparable image of ours (absent, or another size); max_abs_diff:
    the largest difference in grey levels (255 where an image is missing); values: 8-bit values
    compared (H x W x 3 per image); differing / differing_by_more_than_1: values that differ at
    all / by more than 1 (the official codes truncate to 8 bits where we round: a difference of
    1 is that, not the network); ours_minus_official: the smallest and largest signed
    difference.
    """
    return {"images": 0, "identical": 0, "missing": [], "max_abs_diff": 0, "values": 0,
            "differing": 0, "differing_by_more_than_1": 0, "ours_minus_official": [0, 0]}


def add_difference(result: Dict[str, object], name: str, official, ours) -> None:
    """Add one pair of 8-bit images (arrays H x W x C, or None for a missing one of ours) to
    ``result`` (see :func:`empty_comparison`)."""
    import numpy as np

    result["images"] += 1
    if ours is None or official.shape != ours.shape:
        note = "" if ours is None else (f" (size {ours.shape[1]}x{ours.shape[0]}, "
                                        f"official {official.shape[1]}x{official.shape[0]})")
        result["missing"].append(name + note)
        result["max_abs_diff"] = 255  # no image is no match: a tolerance check must fail
        return
    d = ours.astype(np.int16) - official.astype(np.int16)  # int16: uint8 would wrap around
    worst = int(np.abs(d).max()) if d.size else 0
    result["identical"] += worst == 0
    result["max_abs_diff"] = max(result["max_abs_diff"], worst)
    result["values"] += int(d.size)
    result["differing"] += int((d != 0).sum())
    result["differing_by_more_than_1"] += int((np.abs(d) > 1).sum())
    if d.size:
        low, high = result["ours_minus_official"]
        result["ours_minus_official"] = [min(low, int(d.min())), max(high, int(d.max()))]


def read_rgb(path: str):
    """A PNG as an H x W x 3 uint8 array."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def compare_pngs(pairs: Iterable[ImagePair]) -> Dict[str, object]:
    """Pixel comparison of (name, official PNG, our PNG or None) pairs, in the format of
    :func:`empty_comparison`."""
    result = empty_comparison()
    for name, official, ours in pairs:
        mine = read_rgb(ours) if ours and os.path.isfile(ours) else None
        add_difference(result, name, read_rgb(official), mine)
    return result


def comparison_line(check: Dict[str, object]) -> str:
    """One line of a comparison result: images, identical ones, largest difference, counts."""
    share = check["differing"] / check["values"] if check["values"] else 0.0
    line = (f"{check['identical']} of {check['images']} images identical, largest difference "
            f"{check['max_abs_diff']} grey level(s), {check['differing']} of {check['values']} "
            f"values differ ({share:.1%}), {check['differing_by_more_than_1']} by more than 1")
    return line + (f"; missing in ours: {', '.join(check['missing'])}" if check["missing"] else "")
