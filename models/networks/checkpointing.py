"""``--gradient_checkpointing``: recompute chosen blocks in the backward pass instead of keeping
their activations, with exactly the gradients and buffer updates of a step without it.

A block's ``forward`` is replaced on the instance (no wrapper module), so parameter and buffer
names, state_dicts and checkpoints stay as they are. It runs under
``torch.utils.checkpoint(use_reentrant=False)`` only when gradients are on and the block is
training; inference, ``no_grad`` and eval mode run the plain forward (and drop the spectral-norm
weight copies after it, as the checkpointed forward does: the D step's no_grad generator would
otherwise hold a copy of G's spectral-norm weights through the whole D step).

A plain recompute would not be exact, so the recompute context fixes two layers with state:

* spectral norm (``torch.nn.utils.spectral_norm``) runs a power iteration in every training
  forward; the recompute would iterate again (another sigma, u/v advanced twice). The forward
  records the u/v each call used; the recompute computes the weight from those, without iterating.
* batch norm in training updates running_mean/var and num_batches_tracked in forward; the
  recompute's second update is undone (the statistics are restored after it).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import types
from typing import Callable, Dict, Iterator, List, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.utils.checkpoint import checkpoint

from models.networks.config import make_config
from util.errors import OptionError

# Generators whose residual blocks are covered (others raise an OptionError naming the option).
COVERED_GENERATORS = ("spade", "depthspade", "pix2pixhd")


def _spectral_hooks(block: nn.Module) -> List[Tuple[nn.Module, int, SpectralNorm]]:
    return [(m, key, hook) for m in block.modules() for key, hook in m._forward_pre_hooks.items()
            if isinstance(hook, SpectralNorm)]


@contextlib.contextmanager
def _swapped_hooks(hooks: List[Tuple[nn.Module, int, SpectralNorm]], make: Callable) -> Iterator[None]:
    for i, (m, key, hook) in enumerate(hooks):
        m._forward_pre_hooks[key] = make(i, hook)
    try:
        yield
    finally:
        for m, key, hook in hooks:
            m._forward_pre_hooks[key] = hook


class _Call:
    """State of one checkpointed call: the spectral-norm vectors its forward used."""

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.hooks = _spectral_hooks(block)
        self.vectors: List[List[Tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.hooks]

    def contexts(self):
        return self._forward(), self._recompute()

    @contextlib.contextmanager
    def _forward(self) -> Iterator[None]:
        def make(i: int, hook: SpectralNorm):
            def record(module: nn.Module, inputs) -> None:
                hook(module, inputs)  # the usual power iteration (in training)
                self.vectors[i].append((getattr(module, hook.name + "_u").clone(),
                                        getattr(module, hook.name + "_v").clone()))
            return record
        with _swapped_hooks(self.hooks, make):
            yield
        self._release_weights()

    def _release_weights(self) -> None:
        _release_weights(self.hooks)

    @contextlib.contextmanager
    def _recompute(self) -> Iterator[None]:
        # A fresh iterator per recompute: backward(retain_graph=True) may recompute twice.
        replay = [iter(v) for v in self.vectors]

        def make(i: int, hook: SpectralNorm):
            def fixed(module: nn.Module, inputs) -> None:
                u, v = next(replay[i])
                weight = getattr(module, hook.name + "_orig")
                # SpectralNorm.compute_weight's formula, with the forward's u and v
                sigma = torch.dot(u, torch.mv(hook.reshape_weight_to_matrix(weight), v))
                setattr(module, hook.name, weight / sigma)
            return fixed
        norms = [m for m in self.block.modules()
                 if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
        # Batch norm runs as in the forward (same saved tensors, same batch statistics); its
        # second update of the running statistics is undone afterwards.
        stats = [[t.clone() for t in _running(m)] for m in norms]
        with _swapped_hooks(self.hooks, make):
            try:
                yield
            finally:
                with torch.no_grad():
                    for m, saved in zip(norms, stats):
                        for t, value in zip(_running(m), saved):
                            t.copy_(value)
                self._release_weights()


def _release_weights(hooks: List[Tuple[nn.Module, int, SpectralNorm]]) -> None:
    """Drop the normalized weight copies the spectral-norm layers keep as attributes: the
    backward does not need them (they are recomputed) and each forward sets them anew.
    The attribute is left as spectral_norm itself leaves it before a first forward."""
    for m, _, hook in hooks:
        setattr(m, hook.name, getattr(m, hook.name + "_orig").data)


def _running(norm: _BatchNorm) -> List[torch.Tensor]:
    return [t for t in (norm.running_mean, norm.running_var, norm.num_batches_tracked) if t is not None]


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    plain = functools.partial(type(self).forward, self)
    if not torch.is_grad_enabled() or not (self.training or getattr(self, "_checkpoint_in_eval", False)):
        out = plain(*args, **kwargs)
        # Without gradients nothing is recomputed, but the weight copies are dropped as well:
        # e.g. the D step's no_grad generator forward would otherwise keep one copy of every
        # spectral-norm weight of G (about G's size) through the whole D step.
        _release_weights(_spectral_hooks(self))
        return out
    call = _Call(self)
    return checkpoint(plain, *args, use_reentrant=False, context_fn=call.contexts,
                      preserve_rng_state=self._checkpoint_draws_random, **kwargs)


def _draws_random(module: nn.Module) -> bool:
    """Whether the module's forward draws random numbers (dropout). Only then do the checkpoints
    save and restore the RNG states for the recompute (a CPU and a device state per call)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())


def checkpoint_module(module: nn.Module, in_eval: bool = False) -> None:
    """Recompute ``module`` in backward from now on. ``in_eval``: also when the module is in
    eval mode (frozen feature extractors such as the VGG of the perceptual loss)."""
    # a bound method (not a closure): deepcopy rebinds it to the copy
    module.forward = types.MethodType(_checkpointed_forward, module)
    module._checkpoint_draws_random = _draws_random(module)
    if in_eval:
        module._checkpoint_in_eval = True


def is_checkpointed(module: nn.Module) -> bool:
    forward = module.__dict__.get("forward")
    return isinstance(forward, types.MethodType) and forward.__func__ is _checkpointed_forward


def _blocks(net: nn.Module, classes: tuple) -> List[Tuple[str, nn.Module]]:
    return [(name, m) for name, m in net.named_modules() if isinstance(m, classes)]


def block_classes() -> Dict[str, tuple]:
    """Module classes recomputed per network kind."""
    from models.networks.architecture import SPADEResnetBlock
    from models.networks.discriminators import NLayerDiscriminator
    from models.networks.generators.pix2pixhd import ResnetBlock
    from models.networks.encoder import ConvEncoder
    from models.networks.normalization import SPADE
    return {"G": (SPADEResnetBlock, ResnetBlock), "D": (NLayerDiscriminator,), "SPADE": (SPADE,),
            "E": (ConvEncoder,)}


def apply(model: nn.Module, opt: argparse.Namespace) -> List[str]:
    """Apply ``--gradient_checkpointing`` to ``model``'s networks (before DDP / compile
    wrapping); returns the names of the recomputed modules ('G.up_0', ...)."""
    # the three options read here; train-only flags missing from other namespaces (scripts,
    # test-time options) take the network-level defaults (off)
    opt = make_config("gradient checkpointing (models/networks/checkpointing.py)", opt, {},
                      ("gradient_checkpointing", "compile", "netG"))
    if not opt.gradient_checkpointing:
        return []
    if opt.netG not in COVERED_GENERATORS:
        raise OptionError(f"--gradient_checkpointing covers the residual blocks of --netG "
                          f"{', '.join(COVERED_GENERATORS)}; --netG {opt.netG} has none: drop "
                          "--gradient_checkpointing")
    if opt.compile:
        raise OptionError("--gradient_checkpointing and --compile cannot be combined (the exact "
                          "recompute swaps spectral-norm hooks, which torch.compile does not "
                          "trace); drop one of them")
    classes = block_classes()
    done: List[str] = []
    vgg = getattr(model, "criterionVGG", None)
    if vgg is not None:  # frozen and in eval mode, but its input (the fake image) needs gradients
        for i, block in enumerate(vgg.vgg):
            checkpoint_module(block, in_eval=True)
            done.append(f"VGG.{i}")
    for short, net in model.networks().items():
        kind = "D" if short.startswith("D") else "E" if short == "E" else "G"
        if kind == "D":  # each layer group: conv, norm, activation
            blocks = [(f"{name}.{child}", m) for name, d in _blocks(net, classes["D"])
                      for child, m in d.named_children()]
        elif kind == "E":
            # the VAE's encoder as a whole: it keeps only the image, and is recomputed at the
            # very end of the backward, when the generator's activations are gone
            blocks = _blocks(net, classes["E"])
        else:
            blocks = _blocks(net, classes["G"])
            # nested: inside a block's recompute each SPADE layer keeps only its input and
            # output, so the largest (full-resolution) block's recompute holds one layer at a time
            blocks += _blocks(net, classes["SPADE"])
        for name, block in blocks:
            checkpoint_module(block)
            done.append(f"{short}.{name}" if name else short)
    return done


def remove(model: nn.Module) -> int:
    """Undo ``apply`` / ``checkpoint_module`` on every submodule; returns how many."""
    count = 0
    for m in model.modules():
        if is_checkpointed(m):
            del m.forward
            m.__dict__.pop("_checkpoint_in_eval", None)
            m.__dict__.pop("_checkpoint_draws_random", None)
            count += 1
    return count
