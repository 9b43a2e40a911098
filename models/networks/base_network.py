"""What every network shares: the registries, weight initialization and option hooks.

The registries live here (and are re-exported by ``models.networks``) so that the network
modules can register themselves without importing a half-initialized package.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import init
from torch.nn.utils.spectral_norm import SpectralNorm

from models.networks.config import (COMMON_OPTIONS, NetworkConfig, hook_defaults,  # noqa: F401
                                    make_config)
from util.errors import OptionError
from util.options import add_option_once, declared_options  # noqa: F401  (re-exported for the hooks)
from util.registry import Registry

GENERATORS = Registry("generator", "--netG")
DISCRIMINATORS = Registry("discriminator", "--netD")
ENCODERS = Registry("encoder", "--netE")
DEPTH_GENERATORS = Registry("depth generator", "--netG_depth")

INIT_TYPES = ("normal", "xavier", "xavier_uniform", "kaiming", "orthogonal", "none")


def _trainable_weight(m: nn.Module) -> Optional[torch.Tensor]:
    """The parameter that holds a layer's weight: ``weight_orig`` under spectral norm."""
    w = getattr(m, "weight_orig", None)
    if w is None:
        w = getattr(m, "weight", None)
    return w if isinstance(w, torch.Tensor) else None


@torch.no_grad()
def refresh_spectral_norm(module: nn.Module, n_iter: int = 5) -> None:
    """Run power iterations so each spectral-norm ``u``/``v`` matches the current weight.

    ``spectral_norm`` starts ``u``/``v`` at random vectors and only iterates in training
    forwards, so a freshly initialized network in eval mode would otherwise divide by a
    meaningless sigma.
    """
    for m in module.modules():
        for hook in m._forward_pre_hooks.values():
            if not isinstance(hook, SpectralNorm):
                continue
            weight = getattr(m, hook.name + "_orig")
            mat = hook.reshape_weight_to_matrix(weight)
            u = getattr(m, hook.name + "_u")
            v = getattr(m, hook.name + "_v")
            for _ in range(n_iter):
                v.copy_(F.normalize(torch.mv(mat.t(), u), dim=0, eps=hook.eps))
                u.copy_(F.normalize(torch.mv(mat, v), dim=0, eps=hook.eps))


class BaseNetwork(nn.Module):
    """Base class of the generators, discriminators and encoders.

    A network is built from its own ``NetworkConfig`` (``models/networks/config.py``), not the
    whole options namespace: ``define_G`` / ``define_D`` / ``define_E`` / ``define_G_depth``
    build ``cls(cls.config(opt))``. Constructors also take a Namespace (scripts and tests build
    networks directly): their first line is ``opt = self.config(opt)``, which converts it once
    (a config of the class itself passes through) and keeps it as ``self.opt``. The config holds
    the options the class's ``modify_commandline_options`` hook declares, the base options it
    lists in ``base_options`` (a subclass extends its parent's tuple) and ``COMMON_OPTIONS``;
    reading any other option is an AttributeError naming the class and the option.
    ``check_options(opt)`` still receives the full namespace: it checks combinations across
    components.
    """

    # What the registry tells the tools about a network (the zoo tests, scripts/benchmark_*.py):
    # the --preset of its paper (None: no recipe of its own), the smallest flags that train it
    # standalone at 64 px, or None with ``needs_first`` naming the step it needs before training.
    preset: Optional[str] = None
    # With a preset: its option defaults besides --netG (facts from the paper / its code) and who
    # published it; --preset and its --help are built from these.
    recipe: Dict[str, Any] = {}
    recipe_paper: str = ""
    smoke_options: Optional[Tuple[str, ...]] = ()
    needs_first: Optional[str] = None
    # The --model this network only works under (e.g. depthspade: udgan); the options select it
    # when --model is not given and refuse a different explicit --model.
    requires_model: Optional[str] = None
    # The base options (options/base_options.py and friends, not declared by the hook) this
    # network reads besides COMMON_OPTIONS; subclasses extend their parent's tuple.
    base_options: Tuple[str, ...] = ()

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        """Add this network's flags / defaults to the options parser (default: none)."""
        return parser

    @classmethod
    def architecture_options(cls) -> Tuple[str, ...]:
        """The options this network's hook declares with ``role="architecture"`` (they change its
        tensors or forward pass): what its checkpoints store and compare, besides the base
        options (``util.checkpoint.NETWORK_OPTIONS``). Read from the hook itself, once."""
        if "_architecture_options" not in cls.__dict__:
            parser = argparse.ArgumentParser(add_help=False)
            for is_train in (True, False):  # some flags exist only in training
                cls.modify_commandline_options(parser, is_train)
            cls._architecture_options = declared_options(parser, "architecture")
        return cls._architecture_options

    @classmethod
    def declared_defaults(cls) -> Dict[str, Any]:
        """Every option this network's hook declares, with its declared default, including the
        defaults it sets with ``parser.set_defaults`` (e.g. ``norm_G``) (read once)."""
        if "_declared_defaults" not in cls.__dict__:
            def add(parser: argparse.ArgumentParser) -> None:
                for is_train in (True, False):  # some flags exist only in training
                    cls.modify_commandline_options(parser, is_train)
            cls._declared_defaults = hook_defaults(add)
        return cls._declared_defaults

    @classmethod
    def config(cls, opt: Any) -> NetworkConfig:
        """The options this network reads, from ``opt`` (a Namespace, a dict or a
        ``NetworkConfig``): what its hook declares (declared defaults, overridden by ``opt``),
        its ``base_options`` and ``COMMON_OPTIONS`` (from ``opt``, else
        ``NETWORK_BASE_DEFAULTS``). A config of this very class is returned as it is."""
        if isinstance(opt, NetworkConfig) and opt.owner is cls:
            return opt
        return make_config(cls, opt, cls.declared_defaults(), (*COMMON_OPTIONS, *cls.base_options))

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        """Raise OptionError when ``opt`` cannot work for this network (default: always fine)."""

    def num_parameters(self) -> int:
        """Number of learnable scalars (spectral-norm ``u``/``v`` are buffers, not counted)."""
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def init_weights(self, init_type: str = "normal", gain: float = 0.02) -> None:
        """SPADE's initialization.

        Conv / Linear weights follow ``init_type`` (``gain`` is the std for 'normal' and the
        gain for 'xavier' / 'orthogonal'), their biases become 0; affine batch-norm weights
        are drawn from N(1, gain) with zero bias.
        """
        if init_type not in INIT_TYPES:
            raise OptionError(f"--init_type {init_type!r} is not known; choose one of: "
                              f"{', '.join(INIT_TYPES)}")
        for m in self.modules():
            name = m.__class__.__name__
            if "BatchNorm" in name:
                if getattr(m, "weight", None) is not None:
                    init.normal_(m.weight, 1.0, gain)
                if getattr(m, "bias", None) is not None:
                    init.constant_(m.bias, 0.0)
                continue
            if "Conv" not in name and "Linear" not in name:
                continue
            w = _trainable_weight(m)
            if w is None:
                continue
            if init_type == "normal":
                init.normal_(w, 0.0, gain)
            elif init_type == "xavier":
                init.xavier_normal_(w, gain=gain)
            elif init_type == "xavier_uniform":
                init.xavier_uniform_(w, gain=1.0)
            elif init_type == "kaiming":
                init.kaiming_normal_(w, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                init.orthogonal_(w, gain=gain)
            else:  # 'none': PyTorch's default for Conv / Linear
                init.kaiming_uniform_(w, a=math.sqrt(5))
            if getattr(m, "bias", None) is not None:
                init.constant_(m.bias, 0.0)
        refresh_spectral_norm(self)
