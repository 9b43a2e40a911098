"""Losses of SPADE: adversarial (hinge / ls / original / w), feature matching, KLD, VGG; SIMS's
class-masked VGG loss and semantic cross-entropy."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks.vgg import load_vgg19_features
from util.errors import OptionError

GAN_MODES = ("hinge", "ls", "original", "w")
# How the per-scale losses of a multiscale discriminator combine: SPADE averages them, official
# pix2pixHD sums them (its GANLoss adds the scales up; --preset pix2pixhd sets "sum").
GAN_LOSS_REDUCTIONS = ("mean", "sum")
DiscriminatorOutput = Union[torch.Tensor, Sequence[Union[torch.Tensor, Sequence[torch.Tensor]]]]


class GANLoss(nn.Module):
    """Adversarial loss on discriminator outputs.

    ``loss(pred, target_is_real, for_discriminator=True) -> ()`` scalar. ``pred`` is a tensor
    or the multiscale discriminator's list (per scale: features..., prediction); for a list
    the last element of each scale is scored and the per-scale losses are averaged
    (``over_scales="mean"``, SPADE) or summed (``"sum"``, pix2pixHD; ``--gan_loss_over_scales``).
    """

    def __init__(self, gan_mode: str, target_real_label: float = 1.0,
                 target_fake_label: float = 0.0, over_scales: str = "mean") -> None:
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise OptionError(f"--gan_mode {gan_mode!r} is not known; choose one of: "
                              f"{', '.join(GAN_MODES)}")
        if over_scales not in GAN_LOSS_REDUCTIONS:
            raise OptionError(f"--gan_loss_over_scales {over_scales!r} is not known; choose one of: "
                              f"{', '.join(GAN_LOSS_REDUCTIONS)}")
        self.gan_mode = gan_mode
        self.over_scales = over_scales
        self.real_label = target_real_label
        self.fake_label = target_fake_label

    def _target(self, pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        return torch.full_like(pred, self.real_label if target_is_real else self.fake_label)

    def single(self, pred: torch.Tensor, target_is_real: bool,
               for_discriminator: bool = True) -> torch.Tensor:
        """The loss of one prediction map."""
        if self.gan_mode == "original":
            return F.binary_cross_entropy_with_logits(pred, self._target(pred, target_is_real))
        if self.gan_mode == "ls":
            return F.mse_loss(pred, self._target(pred, target_is_real))
        if self.gan_mode == "hinge":
            if not for_discriminator:
                if not target_is_real:
                    raise ValueError("the generator's hinge loss must aim for real")
                return -pred.mean()
            # -mean(min(0, -1 + d)) for real, -mean(min(0, -1 - d)) for fake
            return F.relu(1 - pred).mean() if target_is_real else F.relu(1 + pred).mean()
        return -pred.mean() if target_is_real else pred.mean()  # wgan

    def forward(self, pred: DiscriminatorOutput, target_is_real: bool,
                for_discriminator: bool = True) -> torch.Tensor:
        if isinstance(pred, torch.Tensor):
            return self.single(pred, target_is_real, for_discriminator)
        losses = []
        for scale in pred:
            p = scale if isinstance(scale, torch.Tensor) else scale[-1]
            losses.append(self.single(p, target_is_real, for_discriminator))
        stacked = torch.stack(losses)
        return stacked.sum() if self.over_scales == "sum" else stacked.mean()


def feature_matching_loss(pred_fake: List[List[torch.Tensor]], pred_real: List[List[torch.Tensor]],
                          lambda_feat: float, num_D: int) -> torch.Tensor:
    """L1 between the discriminator's intermediate features on fake and (detached) real.

    Sums over scales and layers (the prediction, last of each scale, is excluded), each term
    weighted by ``lambda_feat / num_D`` as in SPADE. Returns a scalar.
    """
    loss = pred_fake[0][-1].new_zeros(())
    for fake_scale, real_scale in zip(pred_fake, pred_real):
        for f, r in zip(fake_scale[:-1], real_scale[:-1]):
            loss = loss + F.l1_loss(f, r.detach()) * (lambda_feat / num_D)
    return loss


class KLDLoss(nn.Module):
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over batch and latent dims (SPADE).

    ``forward(mu: (N, z_dim), logvar: (N, z_dim)) -> ()``.
    """

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


VGG_NORMALIZATIONS = ("none", "imagenet")


class VGGLoss(nn.Module):
    """Perceptual loss: weighted L1 between VGG19 relu1_1..relu5_1 features.

    ``forward(x: (N, 3, H, W), y: (N, 3, H, W)) -> ()``, images in [-1, 1]; gradients reach
    ``x`` only (``y`` is the target, the VGG is frozen). ``weights_path``: see
    :func:`load_vgg19_features` (raises WeightsError when no weights can be had).

    ``normalize``: ``"none"`` feeds the [-1, 1] image to the VGG as it is, as official SPADE and
    pix2pixHD do (their ``--lambda_vgg 10`` is balanced for that scale); ``"imagenet"`` first maps
    it to [0, 1] and standardizes it with ImageNet's mean / std, the input torchvision's VGG was
    trained on (features about 4x larger, so the loss weighs more).
    """

    slices = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
    layer_weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

    def __init__(self, weights_path: Optional[str] = None, normalize: str = "none") -> None:
        super().__init__()
        if normalize not in VGG_NORMALIZATIONS:
            raise OptionError(f"--vgg_normalize {normalize!r} is not known; choose one of: "
                              f"{', '.join(VGG_NORMALIZATIONS)}")
        features = load_vgg19_features(weights_path)
        self.vgg = nn.ModuleList(features[a:b] for a, b in self.slices)
        self.vgg.requires_grad_(False)
        self.vgg.eval()
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
                             persistent=False)

    def train(self, mode: bool = True) -> "VGGLoss":
        super().train(mode)
        self.vgg.eval()  # frozen whatever the owner's mode
        return self

    def _features(self, img: torch.Tensor) -> List[torch.Tensor]:
        h = ((img + 1) / 2 - self.mean) / self.std if self.normalize == "imagenet" else img
        out = []
        for block in self.vgg:
            h = block(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_feats = self._features(x)
        with torch.no_grad():
            y_feats = self._features(y)
        loss = x.new_zeros(())
        for w, fx, fy in zip(self.layer_weights, x_feats, y_feats):
            loss = loss + w * F.l1_loss(fx, fy.detach())
        return loss


DEPTH_LOSSES = ("l1", "silog")


def depth_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1",
               valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depth reconstruction loss on normalized inverse depth maps ``(N, 1, H, W)`` in [0, 1].

    ``l1``: mean absolute error. ``silog``: the scale-invariant log error (Eigen et al.),
    ``sqrt(mean(g^2) - 0.85 * mean(g)^2)`` with ``g = log(pred) - log(target)`` over pixels
    whose target is above 1e-3 (inverse depth 0 = sky, where a log is meaningless); it ignores
    a global scale, which suits relative-depth targets. ``valid``: optional (N, 1, H, W) bool
    mask of pixels that have a target (e.g. Cityscapes disparity holes).
    """
    if kind not in DEPTH_LOSSES:
        raise OptionError(f"--depth_loss {kind!r} is not known; choose one of: {', '.join(DEPTH_LOSSES)}")
    pred, target = pred.float(), target.float()
    mask = torch.ones_like(target, dtype=torch.bool) if valid is None else valid.bool()
    if kind == "silog":
        mask = mask & (target > 1e-3)
    weight = mask.float()
    count = weight.sum().clamp_min(1.0)
    if kind == "l1":
        return ((pred - target).abs() * weight).sum() / count
    g = (torch.log(pred.clamp_min(1e-3)) - torch.log(target.clamp_min(1e-3))) * weight
    mean_g = g.sum() / count
    mean_g2 = (g * g).sum() / count
    return torch.sqrt((mean_g2 - 0.85 * mean_g * mean_g).clamp_min(1e-8))


# SIMS's perceptual loss (official python_code/synthesis_256_512.py): the pixels and VGG-19's
# conv1_2 .. conv5_2 (after their ReLU), each layer's class-masked L1 divided by these constants,
# which balance the layers' magnitudes on the caffe VGG's 0-255 scale.
SIMS_VGG_LAYERS = ("pixels", "conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
SIMS_VGG_WEIGHTS = (1.0, 1.0 / 2.6, 1.0 / 4.8, 1.0 / 3.7, 1.0 / 5.6, 10.0 / 1.5)
SIMS_SEMANTIC_WEIGHT = 10.0  # the paper's weight of semantic_cross_entropy next to this loss
# torchvision vgg19().features slices ending after the ReLU of conv1_2, conv2_2, ... conv5_2
SIMS_VGG_SLICES = ((0, 4), (4, 9), (9, 14), (14, 23), (23, 32))
# torchvision's VGG reads (x / 255 - mean) / std; the caffe VGG of the paper reads x - 255 * mean
# (x in 0-255). Their first convs agree when W_torchvision ~ 255 * std * W_caffe, and every later
# layer is positively homogeneous (ReLU, pooling, the biases aside), so caffe features are about
# 255 * std times torchvision's: multiplying by it keeps the paper's layer weights in balance
# with the pixel term. std: the mean of ImageNet's (0.229, 0.224, 0.225).
CAFFE_FEATURE_SCALE = 255.0 * 0.226


def class_masked_l1(fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """sum_c mean_{n, h, w} masks[n, c] * mean_channels |fake - real|, masks resized to the
    features' size (bilinear, corners aligned: the official resize).

    ``fake``, ``real``: ``(N, K, h, w)``; ``masks``: ``(N, C, H, W)``. Returns ``()``.
    """
    if masks.shape[-2:] != fake.shape[-2:]:
        masks = F.interpolate(masks, size=fake.shape[-2:], mode="bilinear", align_corners=True)
    diff = (fake - real).abs().mean(dim=1, keepdim=True)  # (N, 1, h, w)
    return (masks * diff).mean(dim=(0, 2, 3)).sum()


class ClassMaskedVGGLoss(nn.Module):
    """SIMS's loss: class-masked L1 between the pixels and VGG-19 conv1_2..conv5_2 features.

    ``forward(fake: (N, 3, H, W), real: (N, 3, H, W), masks: (N, C, H, W)) -> ()``: images in
    [-1, 1], ``masks`` float (one-hot label map or soft masks, any size: resized bilinearly to
    each layer). Per layer l with weight w_l (``SIMS_VGG_WEIGHTS``):
    ``w_l * sum_c mean_{n,h,w} mask_c * mean_channels |f_l(fake) - f_l(real)|``, summed over l.

    The paper's scale: the pixel term compares 0-255 values; the VGG reads torchvision's
    normalized input and its features are multiplied by ``CAFFE_FEATURE_SCALE`` (see there).
    ``avg_pool``: the paper's VGG averages instead of max-pools (2x2, stride 2, a last partial
    window on odd sizes, as TensorFlow's SAME); False keeps torchvision's max pooling.
    Gradients reach ``fake`` only. ``weights_path``: see :func:`load_vgg19_features` (raises
    WeightsError when no weights can be had).
    """

    def __init__(self, weights_path: Optional[str] = None, avg_pool: bool = True) -> None:
        super().__init__()
        features = load_vgg19_features(weights_path)
        if avg_pool:
            for i, layer in enumerate(features):
                if isinstance(layer, nn.MaxPool2d):
                    features[i] = nn.AvgPool2d(2, stride=2, ceil_mode=True)
        self.vgg = nn.ModuleList(features[a:b] for a, b in SIMS_VGG_SLICES)
        self.vgg.requires_grad_(False)
        self.vgg.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
                             persistent=False)

    def train(self, mode: bool = True) -> "ClassMaskedVGGLoss":
        super().train(mode)
        self.vgg.eval()  # frozen whatever the owner's mode
        return self

    def _layers(self, img: torch.Tensor) -> List[torch.Tensor]:
        """[pixels on 0-255, conv1_2, ..., conv5_2 on the caffe scale] of ``img`` in [-1, 1]."""
        unit = (img + 1) / 2
        out = [unit * 255.0]
        h = (unit - self.mean) / self.std
        for block in self.vgg:
            h = block(h)
            out.append(h * CAFFE_FEATURE_SCALE)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if fake.shape != real.shape or fake.dim() != 4 or fake.size(1) != 3:
            raise ValueError(f"ClassMaskedVGGLoss: fake and real must be (N, 3, H, W) images of one "
                             f"shape (got {tuple(fake.shape)} and {tuple(real.shape)})")
        if masks.dim() != 4 or masks.size(0) != fake.size(0):
            raise ValueError(f"ClassMaskedVGGLoss: masks must be (N, C, H, W) with the images' N "
                             f"(got {tuple(masks.shape)} for images {tuple(fake.shape)})")
        masks = masks.to(fake.dtype)
        fake_layers = self._layers(fake)
        with torch.no_grad():
            real_layers = self._layers(real)
        loss = fake.new_zeros(())
        for w, f, r in zip(SIMS_VGG_WEIGHTS, fake_layers, real_layers):
            loss = loss + w * class_masked_l1(f, r.detach(), masks)
        return loss


def semantic_cross_entropy(logits: torch.Tensor, label: torch.Tensor,
                           ignore_index: Optional[int] = None) -> torch.Tensor:
    """Mean cross-entropy of ``logits (N, K, H, W)`` against the label map ``label (N, 1, H, W)``
    (integer ids in [0, K), or ``ignore_index``: left out of the mean). ``()``; 0 (with a
    gradient) when every pixel is ignored. SIMS weighs it ``SIMS_SEMANTIC_WEIGHT``.
    """
    if logits.dim() != 4 or label.dim() != 4 or label.size(1) != 1 \
            or label.shape[0] != logits.shape[0] or label.shape[2:] != logits.shape[2:]:
        raise ValueError(f"semantic_cross_entropy: label must be (N, 1, H, W) matching logits "
                         f"(N, K, H, W) (got {tuple(label.shape)} and {tuple(logits.shape)})")
    if label.dtype.is_floating_point:
        raise ValueError(f"semantic_cross_entropy: label must hold integer class ids (got {label.dtype})")
    target = label[:, 0].long()
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    ids = target[valid]
    lo, hi = int(ids.min()), int(ids.max())  # one sync: a clear error instead of a device assert
    if lo < 0 or hi >= logits.size(1):
        raise ValueError(f"semantic_cross_entropy: label ids must be in [0, {logits.size(1)}) "
                         f"(got {lo}..{hi}); pass ignore_index for the ids to leave out")
    return F.cross_entropy(logits, target, ignore_index=-100 if ignore_index is None else ignore_index)
