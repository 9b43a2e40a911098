"""What a network is built from: a read-only ``NetworkConfig`` holding only the options it reads.

A network does not see the whole options namespace: ``BaseNetwork.config(opt)`` picks the
options its class's hook declares (their declared defaults, overridden by ``opt``), the base
options it lists in ``base_options`` and the ones every network reads (``COMMON_OPTIONS``).
Reading anything else is an ``AttributeError`` that names the network, the option and the fix,
so a network cannot quietly depend on an option it never declared.

Base options missing from a partial namespace (tests and scripts build networks without the
parser) take their value from ``NETWORK_BASE_DEFAULTS``, the one table of network-level base
defaults (a test checks it against the parser's defaults). Nothing here imports ``options``.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, Iterable, Mapping, Tuple, Union

# Base options every network's config holds: the input / output widths and the phase.
COMMON_OPTIONS: Tuple[str, ...] = ("semantic_nc", "output_nc", "isTrain")

# Network-level defaults of base options, for namespaces that lack them. They equal the
# parser's defaults (options/base_options.py, options/train_options.py; isTrain is the
# BaseOptions class attribute): tests/test_networks_config.py checks it.
NETWORK_BASE_DEFAULTS: Dict[str, Any] = {
    "output_nc": 3,
    "isTrain": False,
    "use_vae": False,
    "contain_dontcare_label": False,
    "no_instance": False,
    "no_ganFeat_loss": False,
    "gradient_checkpointing": False,
    "compile": False,
}

# Who a config belongs to: a network class, or a name (the depth estimators, checkpointing).
Owner = Union[type, str]


def _owner_name(owner: Owner) -> str:
    return owner if isinstance(owner, str) else owner.__name__


class NetworkConfig:
    """Read-only options of one network: ``cfg.ngf`` like a Namespace, no defaults at the point
    of use (no ``get``), no assignment.

    Reading an option the config does not hold raises ``AttributeError`` naming the network,
    the option and where to declare it. ``keys()`` / ``as_dict()`` list what it holds.
    """

    def __init__(self, owner: Owner, values: Mapping[str, Any],
                 missing: Iterable[str] = ()) -> None:
        # Values live in __dict__ (plain attribute reads, as fast as a Namespace's and
        # traceable by torch.compile); __setattr__ is closed, so write around it once here.
        state = self.__dict__
        state["_owner"] = owner
        state["_missing"] = frozenset(missing)
        state.update(values)

    def __getattr__(self, name: str) -> Any:
        # Only called when ``name`` is not held.
        if name.startswith("__") or name in ("_owner", "_missing"):
            raise AttributeError(name)
        who = _owner_name(self.__dict__.get("_owner", "network"))
        if name in self.__dict__.get("_missing", ()):
            raise AttributeError(
                f"{who} reads option {name!r}, which the namespace it was built from does not "
                f"have and which has no network-level default: pass a namespace with {name} "
                "(parsed options always have it)")
        owner = self.__dict__.get("_owner")
        if isinstance(owner, str):
            fix = f"add it to the options {who} reads"
        else:
            fix = (f"declare it in {who}.modify_commandline_options (its hook), or list it in "
                   f"{who}.base_options")
        raise AttributeError(f"{who} reads option {name!r}, which its NetworkConfig does not "
                             f"hold: {fix}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the NetworkConfig of {_owner_name(self._owner)} is read-only "
                             f"(setting {name!r}): change the options namespace and build the "
                             "network again")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"the NetworkConfig of {_owner_name(self._owner)} is read-only "
                             f"(deleting {name!r})")

    def __reduce__(self):
        # pickle / deepcopy (DDP spawn, copied networks): rebuilt through __init__
        return (NetworkConfig, (self._owner, self.as_dict(), tuple(self._missing)))

    @property
    def owner(self) -> Owner:
        """The network class (or name) this config belongs to."""
        return self._owner

    def keys(self) -> Tuple[str, ...]:
        """The options held, sorted."""
        return tuple(sorted(k for k in self.__dict__ if k not in ("_owner", "_missing")))

    def as_dict(self) -> Dict[str, Any]:
        """The options held and their values (a new dict)."""
        return {k: self.__dict__[k] for k in self.keys()}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and not name.startswith("_") and name in self.__dict__

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, NetworkConfig) and self._owner == other._owner
                and self.as_dict() == other.as_dict())

    __hash__ = None  # type: ignore[assignment]  (equal by value, and its values may be lists)

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"NetworkConfig[{_owner_name(self._owner)}]({body})"


def namespace_values(opt: Any) -> Mapping[str, Any]:
    """The option values of ``opt``: a Namespace (or any object with attributes), a dict or a
    ``NetworkConfig``."""
    if isinstance(opt, NetworkConfig):
        return opt.as_dict()
    if isinstance(opt, Mapping):
        return opt
    return vars(opt)


def make_config(owner: Owner, opt: Any, declared: Mapping[str, Any],
                listed: Iterable[str]) -> NetworkConfig:
    """The ``NetworkConfig`` of ``owner`` from ``opt``: the ``declared`` options (their
    defaults, overridden by ``opt``) and the ``listed`` base options (from ``opt``, else from
    ``NETWORK_BASE_DEFAULTS``). A listed option found in neither is remembered as missing, so
    that reading it names what to pass."""
    values = namespace_values(opt)
    out: Dict[str, Any] = {}
    missing = []
    for name in (*declared, *listed):
        if name in out:
            continue
        if name in values:
            out[name] = values[name]
        elif name in declared:
            out[name] = declared[name]
        elif name in NETWORK_BASE_DEFAULTS:
            out[name] = NETWORK_BASE_DEFAULTS[name]
        else:
            missing.append(name)
    return NetworkConfig(owner, out, missing)


def hook_defaults(add: Callable[[argparse.ArgumentParser], Any]) -> Dict[str, Any]:
    """``{dest: default}`` of every option ``add(parser)`` adds to a fresh parser, and of every
    default it sets with ``parser.set_defaults`` (e.g. a generator's ``norm_G``)."""
    parser = argparse.ArgumentParser(add_help=False)
    add(parser)
    out = {a.dest: a.default for a in parser._actions
           if a.option_strings and a.default is not argparse.SUPPRESS}
    return {**parser._defaults, **out}
