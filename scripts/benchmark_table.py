"""Markdown table from scripts/benchmark.py's JSON lines (used by scripts/gpu_check.sh).

    python scripts/benchmark_table.py rows.jsonl [more.jsonl ...] [--out table.md]

One table row per configuration (device, generator, size, label channels, width, batch, AMP,
channels_last, SPADE implementation, VAE, gradient checkpointing), read from the rows
themselves, so plain runs, ``--compare`` runs (a conv and a fast row) and
``--compare_checkpointing`` runs (a row without and one with checkpointing, whose memory is the
peak above idle: networks built, no step yet) mix freely. Lines that are not JSON
objects (logs, tracebacks) are skipped. A line ``{"metric": "failed", "config": ..., "reason":
...}`` (written by gpu_check.sh for a run that crashed or timed out) becomes a row saying so.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Iterable, List, Optional, Tuple

# metric -> column; peak_memory comes last in a run, after training and inference
USED = ("train_iter", "inference", "peak_memory", "train_peak_memory", "train_peak_memory_above_idle")
HEADER = ("config", "train s/iter", "train images/s", "inference s/image", "peak memory (MiB)")


def read_rows(lines: Iterable[str]) -> List[dict]:
    rows = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "metric" in row:
            rows.append(row)
    return rows


def describe(row: dict) -> str:
    """``spade 256x256 ngf64 nc184 b8 bf16 channels_last fast`` (height x width; ``vae``,
    ``grad_ckpt`` / ``no_grad_ckpt`` where a row says so)."""
    width = row.get("crop_size")
    aspect = row.get("aspect_ratio") or 1.0
    size = f"{round(width / aspect)}x{width}" if width else "?"
    parts = [str(row.get("netG", "?")), size, f"ngf{row.get('ngf', '?')}",
             f"nc{row.get('semantic_nc', '?')}", f"b{row.get('batchSize', '?')}",
             "fp32" if row.get("amp") in (None, "none") else str(row["amp"])]
    if row.get("channels_last"):
        parts.append("channels_last")
    if row.get("use_vae"):
        parts.append("vae")
    if row.get("spade_impl"):
        parts.append(str(row["spade_impl"]))
    if "gradient_checkpointing" in row:
        parts.append("grad_ckpt" if row["gradient_checkpointing"] else "no_grad_ckpt")
    return " ".join(parts)


def _key(row: dict) -> Tuple:
    return (row.get("device_name"), describe(row))


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: List[dict]) -> str:
    """The Markdown table (with a line naming the devices above it)."""
    groups: Dict[Tuple, Dict[str, float]] = {}
    batch: Dict[Tuple, int] = {}
    failed: List[Tuple[str, str]] = []
    for row in rows:
        if row["metric"] == "failed":
            failed.append((str(row.get("config", "?")), str(row.get("reason", "failed"))))
            continue
        if row["metric"] not in USED:
            continue  # FLOPs, ratios, parameter counts: in the JSON lines, not in this table
        key = _key(row)
        groups.setdefault(key, {})[row["metric"]] = float(row["value"])
        batch[key] = int(row.get("batchSize") or 1)
    devices = sorted({str(k[0]) for k in groups})
    lines = []
    if devices:
        lines += [f"device: {', '.join(devices)}", ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for key, m in groups.items():
        it = m.get("train_iter")
        images = batch[key] / it if it else None
        memory = _fmt(m.get("peak_memory", m.get("train_peak_memory")), ".0f")
        if memory == "-" and "train_peak_memory_above_idle" in m:
            memory = f"{m['train_peak_memory_above_idle']:.0f} above idle"
        lines.append(f"| {key[1]} | {_fmt(it, '.4g')} | {_fmt(images, '.4g')} | "
                     f"{_fmt(m.get('inference'), '.4g')} | {memory} |")
    for config, reason in failed:
        lines.append(f"| {config} | failed: {reason} | - | - | - |")
    lines += ["", "peak memory: torch.cuda.max_memory_allocated on CUDA (peak resident set size "
              "on CPU); images/s = batch / train s/iter (one G step + one D step)."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="files of benchmark.py output ('-' for stdin)")
    parser.add_argument("--out", help="also write the table to this file")
    a = parser.parse_args(argv)
    rows: List[dict] = []
    for name in a.files:
        if name == "-":
            rows += read_rows(sys.stdin)
        else:
            with open(name, encoding="utf-8") as f:
                rows += read_rows(f)
    text = table(rows)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
