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

Layers inside a checkpointed block (the SPADE layers of a residual block) are *replayed*: in the
block's forward each runs once without a graph and its output is kept; the block's recompute
takes that output instead of running the layer again, and the layer itself is recomputed, with
its graph, only in its own backward. So the block's recompute holds one layer's activations at
a time (as a nested checkpoint would) while each layer runs twice, not three times (a nested
checkpoint would run it in the forward, in the block's recompute and in its own). The price is
the layers' outputs, kept from the forward until their block's recompute.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import threading
import types
from typing import Callable, Dict, Iterator, List, Optional, Tuple

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
        # outputs of the replayed layers inside the block (and their versions), in call order
        self.outputs: List[Tuple[torch.Tensor, int]] = []
        self.replay: Optional[Iterator[Tuple[torch.Tensor, int]]] = None  # set while recomputing

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
        with _swapped_hooks(self.hooks, make), _active(self):
            yield
        self._release_weights()

    def _release_weights(self) -> None:
        _release_weights(self.hooks)

    @contextlib.contextmanager
    def _recompute(self) -> Iterator[None]:
        # the forward's u/v in call order (a block is recomputed once per backward)
        replay = [iter(v) for v in self.vectors]

        def make(i: int, hook: SpectralNorm):
            def fixed(module: nn.Module, inputs) -> None:
                u, v = next(replay[i])
                weight = getattr(module, hook.name + "_orig")
                # SpectralNorm.compute_weight's formula, with the forward's u and v
                sigma = torch.dot(u, torch.mv(hook.reshape_weight_to_matrix(weight), v))
                setattr(module, hook.name, weight / sigma)
            return fixed
        with _swapped_hooks(self.hooks, make), _restored_statistics(self.block):
            self.replay = iter(self.outputs)
            try:
                with _active(self):
                    yield
            finally:
                # a block is recomputed once (its contexts cannot be entered twice): the kept
                # outputs are released as soon as it is
                self.replay, self.outputs = None, []
                self._release_weights()

    def through(self, layer: nn.Module, args: tuple) -> torch.Tensor:
        """``layer(*args)`` inside this block: run and kept (forward), or handed back (recompute)."""
        if self.replay is None:
            output = _Replayed.apply(layer, None, len(args), *args, *layer.parameters())
            kept = output.detach()  # shares the storage and the version counter
            self.outputs.append((kept, kept._version))
            return output
        kept, version = next(self.replay)
        if kept._version != version:
            raise RuntimeError(f"--gradient_checkpointing: the output of {type(layer).__name__} was "
                               "modified in place after the forward; its block cannot be recomputed")
        return _Replayed.apply(layer, kept, len(args), *args, *layer.parameters())


_STACK = threading.local()  # the checkpointed calls whose forward or recompute is running


@contextlib.contextmanager
def _active(call: _Call) -> Iterator[None]:
    stack = _STACK.__dict__.setdefault("calls", [])
    stack.append(call)
    try:
        yield
    finally:
        stack.pop()


def _innermost_call() -> Optional[_Call]:
    stack = getattr(_STACK, "calls", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def _restored_statistics(module: nn.Module) -> Iterator[None]:
    """Batch norm runs as in the forward (same input, same batch statistics); its second update
    of the running statistics, in a recompute, is undone afterwards."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    stats = [[t.clone() for t in _running(m)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, saved in zip(norms, stats):
                for t, value in zip(_running(m), saved):
                    t.copy_(value)


class _Replayed(torch.autograd.Function):
    """A layer replayed inside a checkpointed block: ``forward`` runs it without a graph (or,
    in the block's recompute, returns the output kept from the block's forward); ``backward``
    recomputes it with a graph under the forward's autocast state and differentiates it. Its
    parameters are inputs, so their gradients reach them (and DDP's hooks) as usual."""

    @staticmethod
    def forward(ctx, layer: nn.Module, kept: Optional[torch.Tensor], nargs: int, *inputs):
        args = inputs[:nargs]
        ctx.layer, ctx.nargs = layer, nargs
        ctx.is_tensor = [torch.is_tensor(a) for a in args]
        ctx.others = [None if t else a for a, t in zip(args, ctx.is_tensor)]
        ctx.save_for_backward(*[a for a, t in zip(args, ctx.is_tensor) if t])
        ctx.autocast = _autocast_state(args)
        if kept is not None:
            return kept
        return type(layer).forward(layer, *args)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = iter(ctx.saved_tensors)
        args, wrt = [], []
        for i, (is_tensor, other) in enumerate(zip(ctx.is_tensor, ctx.others)):
            if not is_tensor:
                args.append(other)
            elif ctx.needs_input_grad[3 + i]:
                leaf = next(saved).detach().requires_grad_()
                wrt.append(leaf)
                args.append(leaf)
            else:
                args.append(next(saved))
        params = list(ctx.layer.parameters())
        wrt += [p for i, p in enumerate(params) if ctx.needs_input_grad[3 + ctx.nargs + i]]
        # the statistics are restored after the gradient: batch norm's graph holds its buffers
        with _restored_statistics(ctx.layer):
            with torch.enable_grad(), _autocast(ctx.autocast):
                # the layer sees non-leaf views: hooks that module trackers (FlopCounterMode)
                # put on module inputs refuse leaves inside autograd.grad
                args = [a.view_as(a) if torch.is_tensor(a) and a.requires_grad else a for a in args]
                output = type(ctx.layer).forward(ctx.layer, *args)
            grads = iter(torch.autograd.grad(output, wrt, grad, allow_unused=True) if wrt else ())
        arg_grads = [next(grads) if ctx.is_tensor[i] and ctx.needs_input_grad[3 + i] else None
                     for i in range(ctx.nargs)]
        param_grads = [next(grads) if ctx.needs_input_grad[3 + ctx.nargs + i] else None
                       for i in range(len(params))]
        return (None, None, None, *arg_grads, *param_grads)


def _autocast_state(args: tuple) -> List[Tuple[str, bool, torch.dtype]]:
    devices = {a.device.type for a in args if torch.is_tensor(a)} | {"cpu"}
    return [(d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in sorted(devices)]


@contextlib.contextmanager
def _autocast(state: List[Tuple[str, bool, torch.dtype]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for device, enabled, dtype in state:
            stack.enter_context(torch.autocast(device_type=device, dtype=dtype, enabled=enabled))
        yield


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
    outer = _innermost_call()
    if outer is not None and getattr(self, "_checkpoint_replayed", False) and not kwargs:
        return outer.through(self, args)
    call = _Call(self)
    return checkpoint(plain, *args, use_reentrant=False, context_fn=call.contexts,
                      preserve_rng_state=self._checkpoint_draws_random, **kwargs)


def _draws_random(module: nn.Module) -> bool:
    """Whether the module's forward draws random numbers (dropout). Only then do the checkpoints
    save and restore the RNG states for the recompute (a CPU and a device state per call)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())


def checkpoint_module(module: nn.Module, in_eval: bool = False, replayed: bool = False) -> None:
    """Recompute ``module`` in backward from now on. ``in_eval``: also when the module is in
    eval mode (frozen feature extractors such as the VGG of the perceptual loss). ``replayed``:
    inside a checkpointed block, run once and replayed (module docstring); layers with
    spectral norm or random draws are checkpointed as usual instead."""
    # a bound method (not a closure): deepcopy rebinds it to the copy
    module.forward = types.MethodType(_checkpointed_forward, module)
    module._checkpoint_draws_random = _draws_random(module)
    if replayed and not module._checkpoint_draws_random and not _spectral_hooks(module):
        module._checkpoint_replayed = True
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
            # replayed inside the blocks: the largest (full-resolution) block's recompute holds
            # one SPADE layer's activations at a time, and no SPADE layer runs three times
            for name, layer in _blocks(net, classes["SPADE"]):
                checkpoint_module(layer, replayed=True)
                done.append(f"{short}.{name}")
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
            m.__dict__.pop("_checkpoint_replayed", None)
            count += 1
    return count
