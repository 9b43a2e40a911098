"""Start-up banners for the entry points (what SPADE prints before it trains or tests) and the
one switch for progress bars: shown only where a person watches (stderr is a terminal).

Pure formatting: the entry points hand in what they built (options table, dataset, networks).
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Mapping, Optional, Sequence, TextIO, Tuple


def progress_bars_enabled(stream: Optional[TextIO] = None) -> bool:
    """tqdm bars only for a terminal: in a log file or a pipe their carriage returns are noise."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


def parameter_count(net: Any) -> int:
    """Learnable scalars of a network (its ``num_parameters()`` when it has one)."""
    count = getattr(net, "num_parameters", None)
    if callable(count):
        return int(count())
    return sum(p.numel() for p in net.parameters())


def human_count(n: int) -> str:
    """1234567 -> '1.235M' (SPADE prints millions); small counts stay exact."""
    if n >= 1_000_000:
        return f"{n / 1e6:.3f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def network_rows(networks: Mapping[str, Any]) -> Iterable[Tuple[str, str]]:
    """One row per network: ``net<G>  <class>, <N> parameters`` (a DDP wrapper is looked
    through: its ``module`` is the network)."""
    for short, net in networks.items():
        net = getattr(net, "module", net)
        n = parameter_count(net)
        yield f"net{short}", f"{type(net).__name__}, {human_count(n)} parameters ({n:,})"


def format_block(title: str, rows: Sequence[Tuple[str, str]]) -> str:
    """A titled block of ``label: value`` rows with aligned labels."""
    width = max((len(k) for k, _ in rows), default=0)
    lines = [f"----------------- {title} ---------------"]
    lines += [f"{k:>{width}}: {v}" for k, v in rows]
    return "\n".join(lines)


def option_source_line(origin: Mapping[str, Any]) -> Optional[str]:
    """Where the options came from, when a run's opt.json was read."""
    if not origin or not origin.get("file"):
        return None
    restored = len(origin.get("restored", []))
    return (f"options: {restored} read from {origin['file']} (flags on the command line win; "
            "--no_opt_file ignores the file)")


def emit(text: str, stream: Optional[TextIO] = None) -> None:
    stream = sys.stdout if stream is None else stream
    print(text, file=stream, flush=True)
