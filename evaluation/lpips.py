"""LPIPS (Zhang et al., 2018) perceptual distance, loaded only from weights that exist locally.

The ``lpips`` package (``pip install lpips==0.1.4``) ships the calibrated linear layers
(``lpips/weights/v0.1/<net>.pth``); the backbone (AlexNet, VGG16 or SqueezeNet 1.1) needs
torchvision's ImageNet weights, taken from

* ``backbone_weights=PATH``: a torchvision state_dict of that network (``features.*`` keys,
  classifier ignored) or of its ``features`` alone; or
* the torch hub cache, ``$TORCH_HOME/hub/checkpoints/<torchvision file name>`` (e.g.
  ``alexnet-owt-7be5be79.pth``), where ``torchvision.models.alexnet(weights="IMAGENET1K_V1")``
  puts it.

Nothing is downloaded here, and a missing or unreadable file is a ``WeightsError`` naming the
file and the fix: an LPIPS with a random backbone measures nothing, so it is never built.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple, Union
from urllib.parse import urlparse

import torch
from torch import nn

from util.errors import WeightsError

LPIPS_VERSION = "0.1"
# LPIPS backbone name -> (torchvision builder, torchvision weights enum)
BACKBONES: Dict[str, Tuple[str, str]] = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}
_RANGE_SLACK = 1e-3  # tolerated rounding outside [0, 1]


def backbone_url(net: str) -> str:
    """torchvision's download URL of the ImageNet weights LPIPS(``net``) builds on."""
    import torchvision.models as tvm  # late: torchvision is slow to import
    return getattr(tvm, BACKBONES[net][1]).IMAGENET1K_V1.url


def backbone_cache_path(net: str) -> str:
    """Where the backbone weights are looked for: ``<torch hub dir>/checkpoints/<file>``
    (``torch.hub.get_dir()`` follows ``$TORCH_HOME``)."""
    filename = os.path.basename(urlparse(backbone_url(net)).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _missing_backbone(net: str, reason: str) -> WeightsError:
    builder, enum = BACKBONES[net]
    return WeightsError(
        f"LPIPS ({net}) needs torchvision's ImageNet {builder} weights: {reason}\n"
        f"Fix it in one of these ways:\n"
        f"  * put {backbone_url(net)} at {backbone_cache_path(net)} (the torch hub cache; set "
        f"TORCH_HOME to move it), e.g. online: python -c \"import torchvision; "
        f"torchvision.models.{builder}(weights='IMAGENET1K_V1')\";\n"
        f"  * pass the path of a local torchvision {builder} state_dict (backbone_weights / "
        f"the script's LPIPS weights option).")


def _read_backbone(path: str, net: str) -> Dict[str, torch.Tensor]:
    """``features.*`` tensors of a torchvision state_dict file, keyed by feature index
    (``'3.weight'``); also accepts a features-only dict, ``{'state_dict': ...}`` and
    ``module.`` prefixes."""
    if not os.path.isfile(path):
        raise _missing_backbone(net, f"{path} does not exist")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated download, not a torch file, pickled module
        raise _missing_backbone(net, f"cannot read {path}: not a PyTorch state_dict, or a "
                                     f"corrupt or truncated one ({type(e).__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _missing_backbone(net, f"{path} does not hold a state_dict of tensors")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    if any(k.startswith("features.") for k in sd):
        sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    return sd


def _load_backbone(trunk: nn.Module, sd: Dict[str, torch.Tensor], path: str, net: str) -> None:
    """Copy ``sd`` into lpips' sliced trunk: ``sliceK.<index>.<param>`` holds torchvision's
    ``features.<index>.<param>``; every parameter must be present with its shape."""
    mapped: Dict[str, torch.Tensor] = OrderedDict()
    for key, ref in trunk.state_dict().items():
        source = key.split(".", 1)[1]  # drop 'sliceK.'
        if source not in sd:
            raise _missing_backbone(net, f"{path} is not a torchvision {BACKBONES[net][0]} "
                                         f"state_dict (no 'features.{source}')")
        if sd[source].shape != ref.shape:
            raise _missing_backbone(net, f"{path}: features.{source} has shape "
                                         f"{tuple(sd[source].shape)}, LPIPS({net}) expects "
                                         f"{tuple(ref.shape)}")
        if not torch.isfinite(sd[source]).all():
            raise _missing_backbone(net, f"{path}: features.{source} holds NaN or inf")
        mapped[key] = sd[source]
    trunk.load_state_dict(mapped, strict=True)


def _load_linear_layers(model: nn.Module, net: str) -> None:
    """The calibrated 1x1 layers ``lin0..linL`` from the lpips package's own file."""
    import lpips
    path = os.path.join(os.path.dirname(os.path.abspath(lpips.__file__)), "weights",
                        f"v{LPIPS_VERSION}", f"{net}.pth")
    fix = "reinstall the package: pip install --force-reinstall lpips==0.1.4"
    if not os.path.isfile(path):
        raise WeightsError(f"LPIPS linear-layer weights {path} are missing; {fix}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read LPIPS weights {path} ({type(e).__name__}); {fix}") from None
    own = model.state_dict()
    needed = [f"lin{k}.model.1.weight" for k in range(len(model.chns))]
    bad = [k for k in needed if k not in sd or sd[k].shape != own[k].shape]
    if bad:
        raise WeightsError(f"LPIPS weights {path} do not fit LPIPS({net}) ({', '.join(bad)}); {fix}")
    # strict=False: the trunk is not in this file (loaded above); every lin key was checked
    model.load_state_dict({k: sd[k] for k in needed}, strict=False)


class LPIPSDistance(nn.Module):
    """Frozen LPIPS: ``forward(x, y)`` with ``x, y`` float ``(N, 3, H, W)`` in [0, 1]
    (H, W >= 32 for AlexNet) -> ``(N,)`` float32 distances (0 for identical images, about
    0.1-0.7 for different photos). Gradients flow to the inputs, never into the weights."""

    def __init__(self, model: nn.Module, net: str) -> None:
        super().__init__()
        self.model = model
        self.net = net
        self.name = f"lpips-{net}"
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> LPIPSDistance:
        # dropout in lpips' linear layers must stay off: it is a metric, not a loss being trained
        super().train(False)
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_unit_images(x, "x")
        check_unit_images(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs images of the same shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        p = next(self.model.parameters())
        # lpips' normalize=True maps [0, 1] to the [-1, 1] its scaling layer expects
        out = self.model(x.to(p.device, p.dtype), y.to(p.device, p.dtype), normalize=True)
        return out.reshape(out.shape[0]).float()


def check_unit_images(x: torch.Tensor, what: str) -> None:
    """ValueError unless ``x`` is a float ``(N, 3, H, W)`` tensor with values in [0, 1]."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must be an (N, 3, H, W) image tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be float in [0, 1], got {x.dtype} (divide uint8 by 255)")
    if x.numel() and (float(x.min()) < -_RANGE_SLACK or float(x.max()) > 1 + _RANGE_SLACK):
        raise ValueError(f"{what} has values in [{float(x.min()):.3f}, {float(x.max()):.3f}], "
                         f"expected [0, 1]; convert generator output in [-1, 1] with (x + 1) / 2")


def load_lpips(net: str = "alex", backbone_weights: Optional[str] = None,
               device: Union[torch.device, str] = "cpu") -> LPIPSDistance:
    """LPIPS v0.1 with ``net`` in alex | vgg | squeeze, frozen, in eval mode, on ``device``.

    ``backbone_weights``: a local torchvision state_dict of the backbone; default: the torch
    hub cache file (see the module docstring). Raises WeightsError when the lpips package, its
    linear layers or the backbone weights are missing or do not fit; never downloads.
    """
    if net not in BACKBONES:
        raise WeightsError(f"LPIPS backbone {net!r} is unknown; choose one of: "
                           f"{', '.join(sorted(BACKBONES))}")
    try:
        import lpips
    except ImportError:
        raise WeightsError("LPIPS needs the lpips package: pip install lpips==0.1.4") from None
    path = os.path.expanduser(backbone_weights) if backbone_weights else backbone_cache_path(net)
    sd = _read_backbone(path, net)  # before building anything: fail fast, no half-built model
    with warnings.catch_warnings():
        # lpips 0.1.4 calls torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        # pnet_rand=True: build the trunk without torchvision downloading; filled just below
        model = lpips.LPIPS(pretrained=False, net=net, version=LPIPS_VERSION, pnet_rand=True,
                            verbose=False)
    _load_backbone(model.net, sd, path, net)
    _load_linear_layers(model, net)
    return LPIPSDistance(model, net).to(torch.device(device))


__all__ = ["BACKBONES", "LPIPSDistance", "backbone_cache_path", "backbone_url",
           "check_unit_images", "load_lpips"]
