"""Explicit name -> class registries (generators, discriminators, dataset modes, ...).

Entries are added with a decorator in the module that defines them, and the package's
``__init__`` imports each such module once, so ``--netG spade`` is a dict lookup, never a
search through modules for a class whose lowercased name matches.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, TypeVar

from util.errors import OptionError

T = TypeVar("T")


class Registry:
    """A named table of classes (or factories) selectable from the command line."""

    def __init__(self, kind: str, option: str) -> None:
        self.kind = kind          # e.g. "generator"
        self.option = option      # e.g. "--netG", used in error messages
        self._entries: Dict[str, type] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice "
                                 f"({self._entries[name].__module__} and {cls.__module__})")
            self._entries[name] = cls  # type: ignore[assignment]
            setattr(cls, "registry_name", name)
            return cls
        return add

    def get(self, name: str) -> type:
        try:
            return self._entries[name]
        except KeyError:
            raise OptionError(f"{self.option} {name!r} is not a known {self.kind}; "
                              f"choose one of: {', '.join(self.names())}") from None

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
