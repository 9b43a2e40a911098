"""Declaring command-line options once, with what they mean (used by every component's hook).

An option a component declares may carry a ``role``: ``"architecture"`` when it changes the
network's tensors or forward pass. Checkpoints store and compare exactly the architecture
options their networks declared (``util.checkpoint``), so a new generator's options reach the
checkpoint metadata by being declared, with no list to update elsewhere.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Tuple

ROLES = ("architecture",)
# Registry names that were renamed, per option: runs saved under the old name (opt.json, network
# files) keep loading. New runs must type the new name.
RENAMED_VALUES = {"netG": {"sims": "sims_unet"}}


def current_value(option: str, value: Any) -> Any:
    """``value`` of ``option`` under today's name (``RENAMED_VALUES``); other values unchanged."""
    renamed = RENAMED_VALUES.get(option, {})
    return renamed.get(value, value) if isinstance(value, str) else value


def upgrade_saved_options(saved: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a saved option dict (opt.json, a checkpoint's metadata) with renamed values
    under today's names."""
    return {k: current_value(k, v) for k, v in saved.items()}


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
