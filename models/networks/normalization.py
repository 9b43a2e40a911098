"""Normalization layers: SPADE and the plain (non-SPADE) norms of D and E.

Key names follow NVlabs' SPADE so its checkpoints load unchanged.
"""
from __future__ import annotations

import argparse
import re
from typing import Callable, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

from models.networks.fast_spade import LabelCode, modulation as fast_modulation
from util.errors import OptionError
from util.performance import eager_under_compile

NONSPADE_SUBNORMS = ("instance", "batch", "syncbatch", "sync_batch", "none", "")
SPADE_PATTERN = re.compile(r"^spade(instance|batch|syncbatch)(\d)x(\d)$")


def _out_channels(layer: nn.Module) -> int:
    if hasattr(layer, "out_channels"):
        return int(layer.out_channels)
    if hasattr(layer, "out_features"):
        return int(layer.out_features)
    return int(layer.weight_orig.size(0) if hasattr(layer, "weight_orig") else layer.weight.size(0))


def get_nonspade_norm_layer(opt: argparse.Namespace,
                            norm_type: str = "instance") -> Callable[[nn.Module], nn.Module]:
    """A function that wraps a conv layer with the normalization named by ``norm_type``.

    ``norm_type`` is ``[spectral]<instance|batch|syncbatch|none>`` (or just 'spectral'):
    the prefix applies classic spectral norm (``weight_orig``/``weight_u``/``weight_v``);
    when a norm follows, the conv bias is dropped (the norm's mean removal cancels it) and
    the result is ``nn.Sequential(conv, norm)``. 'syncbatch' builds a plain BatchNorm2d, which
    the distributed code converts to SyncBatchNorm.
    """
    spectral = norm_type.startswith("spectral")
    subnorm = norm_type[len("spectral"):] if spectral else norm_type
    if subnorm not in NONSPADE_SUBNORMS:
        raise OptionError(
            f"normalization {norm_type!r} (--norm_D / --norm_E) is not known; use "
            "[spectral]instance, [spectral]batch, [spectral]syncbatch, [spectral]none or spectral")

    def add_norm_layer(layer: nn.Module) -> nn.Module:
        if spectral:
            layer = spectral_norm(layer)
        if subnorm in ("none", ""):
            return layer
        if getattr(layer, "bias", None) is not None:
            delattr(layer, "bias")
            layer.register_parameter("bias", None)
        nc = _out_channels(layer)
        if subnorm == "instance":
            norm: nn.Module = nn.InstanceNorm2d(nc, affine=False)
        else:  # batch / syncbatch
            norm = nn.BatchNorm2d(nc, affine=True)
        return nn.Sequential(layer, norm)

    return add_norm_layer


def parse_spade_config(config_text: str) -> Tuple[str, int]:
    """'spadesyncbatch3x3' -> ('syncbatch', 3). Raises OptionError naming --norm_G."""
    match = SPADE_PATTERN.match(config_text)
    if match is None or match.group(2) != match.group(3) or int(match.group(2)) % 2 == 0:
        raise OptionError(
            f"--norm_G: {config_text!r} is not a SPADE normalization; write "
            "[spectral]spade<instance|batch|syncbatch><k>x<k> with an odd kernel size k, "
            "e.g. spectralspadesyncbatch3x3 or spadeinstance5x5")
    return match.group(1), int(match.group(2))


class SPADE(nn.Module):
    """Spatially-adaptive normalization.

    ``forward(x: (N, norm_nc, H, W), segmap: (N, label_nc, h, w)) -> (N, norm_nc, H, W)``:
    a parameter-free norm of ``x`` modulated per pixel by ``(1 + gamma)`` and ``beta``, both
    predicted from the segmentation map resized (nearest) to ``x``'s size.
    """

    hidden = 128  # SPADE's width of the shared embedding

    def __init__(self, config_text: str, norm_nc: int, label_nc: int) -> None:
        super().__init__()
        norm_type, ks = parse_spade_config(config_text)
        if norm_type == "instance":
            self.param_free_norm: nn.Module = nn.InstanceNorm2d(norm_nc, affine=False)
        else:  # batch / syncbatch: converted to SyncBatchNorm under DDP
            self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        pw = ks // 2
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_nc, self.hidden, kernel_size=ks, padding=pw), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(self.hidden, norm_nc, kernel_size=ks, padding=pw)
        self.mlp_beta = nn.Conv2d(self.hidden, norm_nc, kernel_size=ks, padding=pw)

    def forward(self, x: torch.Tensor, segmap: Union[torch.Tensor, LabelCode]) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        if isinstance(segmap, LabelCode):  # --spade_impl fast: same math, see fast_spade.py
            return self._modulate_fast(normalized, segmap)
        if segmap.shape[2:] != x.shape[2:]:  # nearest to its own size is a copy: skip it
            segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        gamma = self.mlp_gamma(actv)
        beta = self.mlp_beta(actv)
        return normalized * (1 + gamma) + beta

    # Eager under torch.compile: the lookups, cached index maps and custom backward are already
    # the fused form, and their data-dependent sizes (boundary pixels) do not trace.
    @eager_under_compile
    def _modulate_fast(self, normalized: torch.Tensor, code: LabelCode) -> torch.Tensor:
        shared = self.mlp_shared[0]
        layout = _memory_format(normalized)
        modulation = fast_modulation(code, tuple(normalized.shape[2:]), shared.weight, shared.bias,
                                     (self.mlp_gamma.weight, self.mlp_beta.weight),
                                     (self.mlp_gamma.bias, self.mlp_beta.bias),
                                     channels_last=layout == torch.channels_last)
        if modulation.stride(-1) != normalized.stride(-1):
            # match x's memory layout once, so the elementwise ops below run on aligned strides
            modulation = modulation.contiguous(memory_format=layout)
        gamma, beta = modulation.chunk(2, dim=1)
        return torch.addcmul(normalized + beta, normalized, gamma)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
