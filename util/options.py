"""Declaring command-line options once, with what they mean (used by every component's hook).

An option a component declares may carry a ``role``: ``"architecture"`` when it changes the
network's tensors or forward pass. Checkpoints store and compare exactly the architecture
options their networks declared (``util.checkpoint``), so a new generator's options reach the
checkpoint metadata by being declared, with no list to update elsewhere.
"""
from __future__ import annotations

import argparse
from typing import Optional, Tuple

ROLES = ("architecture",)


def add_option_once(parser: argparse.ArgumentParser, flag: str, *aliases: str,
                    role: Optional[str] = None, **kwargs) -> None:
    """``parser.add_argument(flag, *aliases, ...)`` unless ``flag`` exists already: hooks may run
    more than once, and two components may declare the same flag (the first declaration wins).
    ``aliases``: other spellings (e.g. the official code's name after SPADE's)."""
    if role is not None and role not in ROLES:
        raise ValueError(f"option {flag}: unknown role {role!r} (one of {', '.join(ROLES)})")
    if flag not in parser._option_string_actions:
        action = parser.add_argument(flag, *aliases, **kwargs)
        action.role = role  # read back by declared_options


def declared_options(parser: argparse.ArgumentParser, role: str) -> Tuple[str, ...]:
    """The destinations of ``parser``'s options declared with ``role``, in declaration order."""
    return tuple(a.dest for a in parser._actions if getattr(a, "role", None) == role)
