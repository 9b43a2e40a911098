"""Pretrained VGG19 features for the perceptual loss, loaded without surprises.

Weights come from ``--vgg_weights PATH`` or torchvision's ImageNet file in the torch hub
cache (downloaded there only when missing). Any failure is a WeightsError that says how to
fix it; random weights are never used silently.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Union
from urllib.parse import urlparse

import torch
import torch.nn as nn

from util.errors import WeightsError

# torchvision's VGG19 configuration 'E': channels of each 3x3 conv, 'M' = 2x2 max pool.
VGG19_CFG: List[Union[int, str]] = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def build_vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features`` layout (same indices), randomly initialized."""
    layers: List[nn.Module] = []
    in_nc = 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_nc, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_nc = int(v)
    return nn.Sequential(*layers)


def vgg19_url() -> str:
    from torchvision.models import VGG19_Weights  # imported late: torchvision is slow to load
    return VGG19_Weights.IMAGENET1K_V1.url


def hub_cache_path(url: Optional[str] = None) -> str:
    """Where the default weights are looked for: ``<torch hub dir>/checkpoints/<file>``."""
    filename = os.path.basename(urlparse(url or vgg19_url()).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _download_to(url: str, path: str) -> None:
    """Fetch ``url`` into ``path`` (checking the hash in torchvision's file name)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stem = os.path.basename(path).split(".")[0]
    hash_prefix = stem.rsplit("-", 1)[-1] if "-" in stem else None
    torch.hub.download_url_to_file(url, path, hash_prefix=hash_prefix, progress=False)


def _weights_error(reason: str) -> WeightsError:
    try:
        expected = hub_cache_path()
        url = vgg19_url()
    except Exception:  # torchvision missing: still say what to do
        expected, url = "<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth", "torchvision's VGG19"
    return WeightsError(
        f"VGG19 weights for the VGG loss are not available: {reason}\n"
        f"Fix it in one of these ways:\n"
        f"  * pass --vgg_weights PATH, a local torchvision vgg19 state_dict (.pth);\n"
        f"  * put {url} at {expected} (the torch hub cache; set TORCH_HOME to move it);\n"
        f"  * train without the perceptual loss: --no_vgg_loss.")


def _features_state_dict(obj: Any, source: str) -> Dict[str, torch.Tensor]:
    """Accept a full vgg19 state_dict ('features.N.weight', classifier ignored) or a
    features-only one ('N.weight')."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _weights_error(f"{source} does not hold a state_dict of tensors")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    if any(k.startswith("features.") for k in sd):
        sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    return OrderedDict(sd)


def _load_file(path: str) -> nn.Sequential:
    if not os.path.isfile(path):
        raise _weights_error(f"{path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / not a torch file / pickled objects
        raise _weights_error(f"cannot read {path}: not a PyTorch state_dict file, or a corrupt "
                             f"or truncated one ({type(e).__name__})") from None
    sd = _features_state_dict(obj, path)
    net = build_vgg19_features()
    problem = _mismatch(net.state_dict(), sd)
    if problem:
        raise _weights_error(f"{path} is not a torchvision vgg19 state_dict ({problem})")
    net.load_state_dict(sd, strict=True)
    return net


def _mismatch(expected: Dict[str, torch.Tensor], given: Dict[str, torch.Tensor]) -> str:
    """A short description of how ``given`` differs from ``expected`` ('' if it fits)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
        return "; ".join(parts)
    for k, v in expected.items():
        if given[k].shape != v.shape:
            return f"{k} has shape {tuple(given[k].shape)}, expected {tuple(v.shape)}"
    return ""


def load_vgg19_features(weights_path: Optional[str] = None) -> nn.Sequential:
    """torchvision's ``vgg19().features`` (``nn.Sequential`` of 37 layers) with ImageNet weights.

    ``weights_path``: a local state_dict (full vgg19 or features only). Without it the
    torchvision file in the hub cache is used, downloaded first if absent.
    Raises WeightsError on any failure.
    """
    if weights_path:
        return _load_file(os.path.expanduser(weights_path))
    try:
        url = vgg19_url()
    except Exception as e:
        raise _weights_error(f"torchvision cannot name the VGG19 weights ({e})") from None
    path = hub_cache_path(url)
    if not os.path.isfile(path):
        try:
            _download_to(url, path)
        except Exception as e:  # offline, proxy, disk full, hash mismatch
            raise _weights_error(f"{path} is not cached and downloading {url} failed "
                                 f"({type(e).__name__}: {e})") from None
    return _load_file(path)
