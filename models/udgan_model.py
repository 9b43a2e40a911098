"""The UDGAN model (``--model udgan``, selected by ``--netG depthspade``).

SPADE plus depth ("Efficient Semantic Image Synthesis with Normalization Layers and Depth
Estimation"):

* a depth generator ``G_depth`` predicts depth from the label map; the image generator's SPADE
  layers see [labels, depth]. Its target (``--depth_source``) is the dataset's depth map or
  a frozen estimator's depth of the real image; loss ``Depth`` (L1 or scale-invariant log).
* a depth discriminator ``D_depth`` judges (labels, depth(image)) pairs, where depth(image)
  comes from the frozen depth estimator: real = depth of the real image, fake = depth of the
  synthesized one. The generator is trained through the estimator (its weights never change);
  losses ``GAN_depth``, ``GAN_Feat_depth`` and, for D, ``D_Fake_depth``, ``D_real_depth``.

All depth maps are normalized inverse depth in [0, 1] (see ``data/base_dataset.py``).
"""
from __future__ import annotations

import argparse
import copy
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from models import MODELS
from models.networks import DISCRIMINATORS, GENERATORS, define_G_depth
from models.networks.base_network import add_option_once
from models.networks.loss import DEPTH_LOSSES, depth_loss, feature_matching_loss
from models.pix2pix_model import Batch, Columns, Pix2PixModel, batch_flag
from util.errors import DatasetError, OptionError
from util.image_io import Visual

DEPTH_SOURCES = ("dataset", "estimator")


def depth_discriminator_options(opt: argparse.Namespace) -> argparse.Namespace:
    """The options the depth discriminator is built from: its own kind and number of scales,
    and one image channel (depth) next to the semantics."""
    dopt = copy.copy(opt)
    dopt.netD = opt.netD_depth
    dopt.num_D = opt.num_D_depth
    dopt.output_nc = 1
    return dopt


def depth_visuals(batch: Batch, out: Mapping[str, torch.Tensor], index: int,
                  training: bool) -> Tuple[Columns, Columns, Columns]:
    """Depth columns (UDGAN, SIMS), as ``extra_visuals`` returns them: ``input_depth`` (the
    dataset's map the image followed), ``synthesized_depth`` (the depth generator's) and its
    reference: in training the loss's ``target_depth``, at test time the dataset's
    ``real_depth`` where the sample has one."""
    inputs = {"input_depth": Visual("depth", out["input_depth"][index])} if "input_depth" in out else {}
    outputs: Columns = {}
    references: Columns = {}
    if "depth" in out:
        outputs["synthesized_depth"] = Visual("depth", out["depth"][index])
        if not training and batch_flag(batch, "has_depth", index, default=False):
            references["real_depth"] = Visual("depth", batch["depth"][index])
    if training and "target_depth" in out:
        references["target_depth"] = Visual("depth", out["target_depth"][index])
    return inputs, outputs, references


@MODELS.register("udgan")
class UDGANModel(Pix2PixModel):
    """Pix2PixModel + depth generator + depth discriminator + frozen depth estimator."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--depth_from", type=str, default="generator",
                        choices=("generator", "dataset"),
                        help="test time: the depth map that steers the image, the depth "
                             "generator's or the dataset's own (to control the 3-D layout)")
        if not is_train:
            return parser
        add_option_once(parser, "--depth_source", type=str, default="dataset", choices=DEPTH_SOURCES,
                        help="target of the depth generator: the dataset's depth maps, or the "
                             "frozen depth estimator applied to the real image")
        add_option_once(parser, "--lambda_depth", type=float, default=10.0,
                        help="weight of the depth generator's reconstruction loss")
        add_option_once(parser, "--depth_loss", type=str, default="l1", choices=DEPTH_LOSSES,
                        help="depth reconstruction loss: l1, or silog (scale-invariant log)")
        add_option_once(parser, "--no_depth_D", action="store_true",
                        help="no depth discriminator (then no depth estimator is needed unless "
                             "--depth_source estimator)")
        add_option_once(parser, "--netD_depth", type=str, default="multiscale",
                        help="depth discriminator architecture (a --netD name)")
        add_option_once(parser, "--num_D_depth", type=int, default=2,
                        help="scales of the depth discriminator")
        add_option_once(parser, "--lambda_depth_gan", type=float, default=1.0,
                        help="weight of the depth discriminator's GAN loss")
        add_option_once(parser, "--lambda_depth_feat", type=float, default=10.0,
                        help="weight of the depth discriminator's feature matching loss")
        from models.networks.depth_estimators import add_depth_estimator_options
        add_depth_estimator_options(parser)
        return parser  # the options parser runs the --netD_depth hook like --netD's

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__(opt)
        uses_depth = getattr(GENERATORS.get(opt.netG), "uses_generated_depth", False)
        self.netG_depth: Optional[nn.Module] = define_G_depth(opt) if uses_depth else None
        self.netD_depth: Optional[nn.Module] = None
        self.depth_estimator: Optional[nn.Module] = None
        if not opt.isTrain:
            return
        if not opt.no_depth_D:
            if opt.num_D_depth < 1:
                raise OptionError(f"--num_D_depth must be at least 1 (got {opt.num_D_depth})")
            cls = DISCRIMINATORS.get(opt.netD_depth)
            dopt = depth_discriminator_options(opt)
            cls.check_options(dopt)
            self.netD_depth = cls(dopt)
            self.netD_depth.init_weights(opt.init_type, opt.init_variance)
        if self.netD_depth is not None or (uses_depth and opt.depth_source == "estimator"):
            from models.networks.depth_estimators import build_depth_estimator
            self.depth_estimator = build_depth_estimator(opt)

    def networks(self) -> Dict[str, nn.Module]:
        nets = super().networks()
        if self.netG_depth is not None:
            nets["G_depth"] = self.netG_depth
        if self.netD_depth is not None:
            nets["D_depth"] = self.netD_depth
        return nets

    def extra_visuals(self, batch: Batch, out: Mapping[str, torch.Tensor], index: int,
                      training: bool) -> Tuple[Columns, Columns, Columns]:
        return depth_visuals(batch, out, index, training)

    # ------------------------------------------------------------------ depth maps
    def dataset_depth(self, batch: Batch, why: str) -> torch.Tensor:
        """The batch's depth maps ``(N, 1, H, W)`` on the device; a clear error when missing."""
        has = torch.as_tensor(batch.get("has_depth", False)).reshape(-1)
        if not bool(has.all()):
            paths = [p for p, ok in zip(batch.get("path", []), has.tolist()) if not ok]
            raise DatasetError(
                f"{why}: sample {paths[0] if paths else '?'} has no depth map. Add depth maps "
                "(custom layout: DATAROOT/depth/NAME.png|npy; Cityscapes: DATAROOT/disparity/; "
                "the synthetic dataset has them), or use --depth_source estimator with "
                "--depth_estimator_path")
        return batch["depth"].to(self.device, non_blocking=True).float()

    def depth_target(self, batch: Batch, real: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The depth generator's target ``(N, 1, H, W)`` and its valid pixels (``None``: all).

        The estimator's depth is defined everywhere; a dataset's has holes (``depth_valid``)."""
        if self.opt.depth_source == "estimator":
            with torch.no_grad():
                return self.depth_estimator(real).float(), None
        target = self.dataset_depth(batch, "--depth_source dataset")
        valid = batch.get("depth_valid")
        if valid is None:
            return target, None
        return target, valid.to(self.device, non_blocking=True).bool()

    # ------------------------------------------------------------------ generation
    def generate(self, semantics: torch.Tensor, z: Optional[torch.Tensor],
                 batch: Optional[Batch] = None) -> Dict[str, torch.Tensor]:
        """``{"image", "depth"}`` (generated depth); at test time with ``--depth_from dataset``
        the image follows the dataset's depth, returned as ``input_depth``."""
        if self.netG_depth is None:
            return super().generate(semantics, z, batch)
        depth = self.netG_depth(semantics)
        out = {"depth": depth}
        steer = depth
        if not self.opt.isTrain and getattr(self.opt, "depth_from", "generator") == "dataset":
            steer = self.dataset_depth(batch or {}, "--depth_from dataset").to(depth.dtype)
            out["input_depth"] = steer
        out["image"] = self.netG(semantics, z=z, depth=steer)
        return out

    def _depth_pair(self, fake: torch.Tensor, real: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Estimated depth of the fake (differentiable) and of the real image (constant)."""
        fake_depth = self.depth_estimator(fake)
        with torch.no_grad():
            real_depth = self.depth_estimator(real)
        return fake_depth, real_depth

    # ------------------------------------------------------------------ losses
    def extra_generator_losses(self, batch: Batch, semantics: torch.Tensor, real: torch.Tensor,
                               outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Depth reconstruction and depth-GAN losses; adds ``target_depth`` to ``outputs``
        for display."""
        opt = self.opt
        losses: Dict[str, torch.Tensor] = {}
        if self.netG_depth is not None:
            target, valid = self.depth_target(batch, real)
            losses["Depth"] = depth_loss(outputs["depth"], target, opt.depth_loss, valid) * opt.lambda_depth
            outputs["target_depth"] = target
        if self.netD_depth is not None:
            fake_depth, real_depth = self._depth_pair(outputs["image"], real)
            pred_fake, pred_real = self.discriminate(semantics, fake_depth, real_depth, self.netD_depth)
            losses["GAN_depth"] = self.criterionGAN(pred_fake, True, for_discriminator=False) \
                * opt.lambda_depth_gan
            if not opt.no_ganFeat_loss:
                losses["GAN_Feat_depth"] = feature_matching_loss(
                    pred_fake, pred_real, opt.lambda_depth_feat, opt.num_D_depth)
        return losses

    def extra_discriminator_losses(self, batch: Batch, semantics: torch.Tensor, real: torch.Tensor,
                                   outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if self.netD_depth is None:
            return {}
        with torch.no_grad():
            fake_depth, real_depth = self._depth_pair(outputs["image"].detach(), real)
        pred_fake, pred_real = self.discriminate(semantics, fake_depth, real_depth, self.netD_depth)
        return {"D_Fake_depth": self.criterionGAN(pred_fake, False, for_discriminator=True),
                "D_real_depth": self.criterionGAN(pred_real, True, for_discriminator=True)}
