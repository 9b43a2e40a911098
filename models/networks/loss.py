"""Losses of SPADE: adversarial (hinge / ls / original / w), feature matching, KLD, VGG."""
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
