"""Helpers for declaring command-line options (used by every component's hook)."""
from __future__ import annotations

import argparse


def add_option_once(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    """``parser.add_argument`` unless ``flag`` exists already: hooks may run more than once, and
    two components may declare the same flag (the first declaration wins)."""
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, **kwargs)
