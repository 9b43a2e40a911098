"""The SPADE/GauGAN wrapper: label maps in, losses and images out.

It turns a data batch into the generator's input (one-hot labels, dontcare channel, instance
edges), runs the generator, the multiscale discriminator and the VAE style encoder, and
composes the losses. Named methods replace SPADE's ``forward(data, mode="generator")`` switch,
so each network can be wrapped in DDP on its own by the trainer.
"""
from __future__ import annotations

import argparse
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from data.base_dataset import COND_INPUTS
from models import MODELS
from models.networks import GENERATORS, define_D, define_E, define_G
from models.networks.discriminators import takes_label_and_image
from models.networks.feature_encoder import (FeatureEncoder, check_feature_options, cluster_feature_map,
                                             cluster_file_path, encode_command, feature_channels,
                                             load_cluster_file, uses_clusters, uses_features)
from models.networks.loss import GANLoss, KLDLoss, VGGLoss, feature_matching_loss
from util.distributed import unwrap
from util.errors import DatasetError
from util.image_io import Visual

Batch = Mapping[str, torch.Tensor]
Columns = Dict[str, Visual]


def batch_flag(batch: Batch, key: str, index: int, default: bool) -> bool:
    """``batch[key][index]`` as a bool (``has_image``, ``has_depth``); ``default`` if absent."""
    if key not in batch:
        return default
    return bool(torch.as_tensor(batch[key]).reshape(-1)[index])


def one_hot_labels(label: torch.Tensor, num_classes: int, extra_channels: int = 0) -> torch.Tensor:
    """``label: (N, 1, H, W) int64`` ids in [0, num_classes) -> ``(N, num_classes, H, W)`` float,
    followed by ``extra_channels`` zero channels for the caller to fill (instead of a
    concatenation that would copy the whole map again)."""
    n, _, h, w = label.shape
    out = torch.zeros(n, num_classes + extra_channels, h, w, device=label.device)
    out[:, :num_classes].scatter_(1, label.long(), 1.0)
    return out


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """Instance boundaries: ``instance: (N, 1, H, W)`` ids -> ``(N, 1, H, W)`` float in {0, 1}.

    A pixel is an edge when its right/left or lower/upper neighbour has another id, so both
    sides of a boundary are marked (SPADE's convention).
    """
    edge = torch.zeros_like(instance, dtype=torch.bool)
    horizontal = instance[:, :, :, 1:] != instance[:, :, :, :-1]
    vertical = instance[:, :, 1:, :] != instance[:, :, :-1, :]
    edge[:, :, :, 1:] |= horizontal
    edge[:, :, :, :-1] |= horizontal
    edge[:, :, 1:, :] |= vertical
    edge[:, :, :-1, :] |= vertical
    return edge.float()


def generator_options(opt: argparse.Namespace) -> argparse.Namespace:
    """The options the generator is built from: ``semantic_nc`` counts pix2pixHD's
    instance-wise features too (``--feat_num`` channels after the label input), which the
    discriminator does not see. ``opt`` itself is left unchanged."""
    extra = feature_channels(opt)
    if not extra:
        return opt
    return argparse.Namespace(**{**vars(opt), "semantic_nc": opt.semantic_nc + extra})


@MODELS.register("pix2pix")
class Pix2PixModel(nn.Module):
    """Generator + (training only) multiscale discriminator + optional VAE encoder, or
    pix2pixHD's instance-wise feature encoder (``--instance_feat`` / ``--label_feat``)."""

    # the generator's GAN + feature-matching terms (SIMS's --no_gan trains without them)
    use_gan = True
    # the --netG this model selects when none is given (None: the --netG default, spade)
    default_netG: Optional[str] = None

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        return FeatureEncoder.modify_commandline_options(parser, is_train)  # pix2pixHD's --instance_feat

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__()
        self.opt = opt
        GENERATORS.get(opt.netG).check_options(opt)
        check_feature_options(opt)
        self.netG = define_G(generator_options(opt))
        self.netD = define_D(opt) if opt.isTrain else None
        self.netE = define_E(opt) if opt.use_vae else None
        self.feature_clusters = None
        if uses_features(opt):
            # pix2pixHD: E is trained with G; at test time it encodes the real image
            # (--use_encoded_image) or the features are drawn from the cluster file.
            if uses_clusters(opt):
                self.feature_clusters = load_cluster_file(cluster_file_path(opt), opt.feat_num,
                                                          encode_command(opt))
                self.cluster_generator = torch.Generator().manual_seed(opt.seed)
            else:
                self.netE = define_E(opt, "pix2pixhd")
        if opt.isTrain:
            self.criterionGAN = GANLoss(opt.gan_mode, over_scales=getattr(opt, "gan_loss_over_scales", "mean"))
            self.criterionVGG = self.perceptual_loss(opt)
            self.KLDLoss = KLDLoss()

    def perceptual_loss(self, opt: argparse.Namespace) -> Optional[nn.Module]:
        """The ``VGG`` term's loss (None with ``--no_vgg_loss``); models with their own perceptual
        loss return None here, so the VGG weights load once."""
        return None if opt.no_vgg_loss else VGGLoss(opt.vgg_weights, getattr(opt, "vgg_normalize", "none"))

    @property
    def device(self) -> torch.device:
        return next(self.netG.parameters()).device

    def networks(self) -> Dict[str, nn.Module]:
        """Networks that are saved, by SPADE's short names (G, D, E)."""
        nets = {"G": self.netG, "D": self.netD, "E": self.netE}
        return {k: v for k, v in nets.items() if v is not None}

    # ------------------------------------------------------------------ inputs
    def preprocess_input(self, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batch -> ``semantics: (N, semantic_nc, H, W)`` and ``image: (N, 3, H, W)`` on device.

        ``semantics`` = one-hot labels (+ dontcare) + instance edges + the continuous maps
        named by ``--cond_inputs`` (e.g. the dataset's depth), in that order.
        """
        opt, device = self.opt, self.device
        if opt.label_nc == 0:  # image-to-image: "label" is an image in [-1, 1] (pix2pix's A)
            label = batch["label"].to(device, non_blocking=True).float()
            channels = getattr(opt, "input_nc", 3)  # --input_nc: aligned mode's grey (1) or RGB (3)
            if label.dim() != 4 or label.size(1) != channels:
                raise DatasetError(f"--label_nc 0 expects {channels}-channel input images as 'label'; got "
                                   f"shape {tuple(label.shape)}: use a dataset mode that yields images "
                                   f"(e.g. aligned, noisy) or set --label_nc to the number of classes")
            parts = [label]
        else:
            parts = []
        if not opt.no_instance:
            instance = batch["instance"].to(device, non_blocking=True)
            edges = instance_edges(instance)
            if not getattr(opt, "no_instance_dist", True):  # ASAPNet's --no_instance_dist 0
                from models.networks.generators.asapnet import edge_distance
                edges = edge_distance(edges)
            parts.append(edges)
        for name in getattr(opt, "cond_inputs", []):
            key, _, flag = COND_INPUTS[name]
            if flag in batch and not bool(torch.as_tensor(batch[flag]).all()):
                paths = [p for p, ok in zip(batch.get("path", []), torch.as_tensor(batch[flag])) if not ok]
                raise DatasetError(
                    f"--cond_inputs {name}: sample {paths[0] if paths else '?'} has no {name} map. "
                    f"Give every sample one (see README, 'Depth') or drop --cond_inputs {name}")
            parts.append(batch[key].to(device, non_blocking=True).float())
        image = batch["image"].to(device, non_blocking=True)
        if opt.label_nc == 0:
            return torch.cat(parts, dim=1), image
        label = batch["label"].to(device, non_blocking=True).long()
        num_classes = opt.label_nc + (1 if opt.contain_dontcare_label else 0)
        semantics = one_hot_labels(label, num_classes, sum(p.size(1) for p in parts))
        start = num_classes
        for part in parts:  # written in place after the one-hot channels
            semantics[:, start:start + part.size(1)] = part
            start += part.size(1)
        return semantics, image

    # ------------------------------------------------------------------ pieces
    def encode_z(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Style encoding with the reparameterization trick: ``(z, mu, logvar)``, each (N, z_dim)."""
        mu, logvar = self.netE(image)
        std = torch.exp(0.5 * logvar)
        z = torch.randn_like(std) * std + mu
        return z, mu, logvar

    def style_code(self, image: Optional[torch.Tensor],
                   compute_kld: bool = False) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(z, weighted KLD)`` from the style image with the VAE; ``(None, None)`` without."""
        if not (self.opt.use_vae and image is not None):
            return None, None
        z, mu, logvar = self.encode_z(image)
        kld = self.KLDLoss(mu, logvar) * self.opt.lambda_kld if compute_kld else None
        return z, kld

    def instance_features(self, batch: Optional[Batch]) -> torch.Tensor:
        """pix2pixHD's region-averaged features ``(N, feat_num, H, W)`` for the batch: E on the
        real image, or (test time without --use_encoded_image) cluster centres."""
        opt, device = self.opt, self.device
        if batch is None:
            raise ValueError("--instance_feat / --label_feat: the generator needs the batch (regions, image)")
        regions = batch["label" if opt.label_feat else "instance"].to(device, non_blocking=True)
        if self.feature_clusters is not None:
            return cluster_feature_map(regions, batch["label"], self.feature_clusters, opt.feat_num,
                                       self.cluster_generator)
        if not bool(torch.as_tensor(batch.get("has_image", True)).all()):
            raise DatasetError("--use_encoded_image encodes the real images, but this dataset has "
                               "label maps only: test with --load_features (the cluster file) instead")
        return self.netE(batch["image"].to(device, non_blocking=True), regions)

    def generate(self, semantics: torch.Tensor, z: Optional[torch.Tensor],
                 batch: Optional[Batch] = None) -> Dict[str, torch.Tensor]:
        """Generator outputs by name: ``{"image": (N, 3, H, W)}`` (subclasses add more)."""
        if uses_features(self.opt):
            features = self.instance_features(batch)
            semantics = torch.cat([semantics, features.to(semantics.dtype)], dim=1)
        return {"image": self.netG(semantics, z=z)}

    def generate_fake(self, semantics: torch.Tensor, image: Optional[torch.Tensor],
                      compute_kld: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """SPADE's helper: ``(fake image, weighted KLD or None)``."""
        z, kld = self.style_code(image, compute_kld)
        return self.generate(semantics, z)["image"], kld

    def discriminate(self, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                     netD: Optional[nn.Module] = None):
        """One discriminator pass over [fake; real] (same normalization statistics for both)."""
        netD = self.netD if netD is None else netD
        fake_and_real = torch.cat([fake, real], dim=0)
        if takes_label_and_image(netD):
            # The label half of the input is shared: convolved and pooled once (exact). While D
            # is frozen (the generator step) the real half runs without gradients (exact too).
            return netD(semantics, fake_and_real, split=fake.size(0))
        pred = netD(torch.cat([semantics.repeat(2, 1, 1, 1), fake_and_real], dim=1))
        half = fake.size(0)
        split_fake = [[t[:half] for t in scale] for scale in pred]
        split_real = [[t[half:] for t in scale] for scale in pred]
        return split_fake, split_real

    # ------------------------------------------------------------------ losses
    def generator_loss(self, batch: Batch) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """Generator losses (weighted, SPADE's names) and the generator's outputs by name
        (``image``; subclasses add e.g. ``depth``) for display."""
        opt = self.opt
        semantics, real = self.preprocess_input(batch)
        z, kld = self.style_code(real, compute_kld=opt.use_vae)
        outputs = self.generate(semantics, z, batch)
        fake = outputs["image"]
        losses: Dict[str, torch.Tensor] = {}
        if kld is not None:
            losses["KLD"] = kld
        if self.use_gan:
            losses.update(self.adversarial_losses(semantics, fake, real))
        if self.criterionVGG is not None:
            losses["VGG"] = self.criterionVGG(fake.float(), real.float()) * opt.lambda_vgg
        if getattr(opt, "lambda_L1", 0) > 0:  # pix2pix's reconstruction term
            losses["L1"] = F.l1_loss(fake.float(), real.float()) * opt.lambda_L1
        if getattr(opt, "MSE_loss", False):  # ASAPNet's --MSE_loss
            losses["MSE"] = F.mse_loss(fake.float(), real.float()) * opt.lambda_MSE
        # terms a generator computed in its forward (ASAPNet's --use_weight_decay)
        losses.update(getattr(unwrap(self.netG), "regularization_losses", dict)())
        losses.update(self.extra_generator_losses(batch, semantics, real, outputs))
        return losses, outputs

    def adversarial_losses(self, semantics: torch.Tensor, fake: torch.Tensor,
                           real: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The generator's ``GAN`` and ``GAN_Feat`` terms (weighted) for ``fake`` against ``real``."""
        opt = self.opt
        losses: Dict[str, torch.Tensor] = {}
        pred_fake, pred_real = self.discriminate(semantics, fake, real)
        if not getattr(opt, "no_adv_loss", False):  # ASAPNet's --no_adv_loss
            losses["GAN"] = self.criterionGAN(pred_fake, True, for_discriminator=False)
        if not opt.no_ganFeat_loss:
            # one term per scale the discriminator has (--netD patch has one, multiscale --num_D)
            losses["GAN_Feat"] = feature_matching_loss(pred_fake, pred_real, opt.lambda_feat, len(pred_fake))
        return losses

    def extra_generator_losses(self, batch: Batch, semantics: torch.Tensor, real: torch.Tensor,
                               outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Hook for models with more networks (UDGAN's depth losses); none here."""
        return {}

    def discriminator_loss(self, batch: Batch) -> Dict[str, torch.Tensor]:
        semantics, real = self.preprocess_input(batch)
        with torch.no_grad():
            z, _ = self.style_code(real)
            outputs = self.generate(semantics, z, batch)
        fake = outputs["image"].detach()
        pred_fake, pred_real = self.discriminate(semantics, fake, real)
        losses = {"D_Fake": self.criterionGAN(pred_fake, False, for_discriminator=True),
                  "D_real": self.criterionGAN(pred_real, True, for_discriminator=True)}
        losses.update(self.extra_discriminator_losses(batch, semantics, real, outputs))
        return losses

    def extra_discriminator_losses(self, batch: Batch, semantics: torch.Tensor, real: torch.Tensor,
                                   outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Hook for models with more discriminators; none here."""
        return {}

    # ------------------------------------------------------------------ synthesis
    @torch.no_grad()
    def synthesize(self, batch: Batch, z: Optional[torch.Tensor] = None,
                   use_style_image: bool = True) -> Dict[str, torch.Tensor]:
        """All generator outputs by name (``image`` (N, 3, H, W) in [-1, 1], ...).

        With the VAE, ``z`` is taken as given, else encoded from the batch's real image
        (``use_style_image`` and the batch has one), else drawn from the prior N(0, I).
        """
        semantics, image = self.preprocess_input(batch)
        if self.opt.use_vae and z is None:
            has_image = bool(torch.as_tensor(batch.get("has_image", True)).all())
            if use_style_image and has_image:
                z, _, _ = self.encode_z(image)
        return self.generate(semantics, z, batch)

    @torch.no_grad()
    def inference(self, batch: Batch, z: Optional[torch.Tensor] = None,
                  use_style_image: bool = True) -> torch.Tensor:
        """Synthesize ``(N, 3, H, W)`` in [-1, 1] (see ``synthesize``)."""
        return self.synthesize(batch, z, use_style_image)["image"]

    # ------------------------------------------------------------------ page columns
    def visuals(self, batch: Batch, samples: Sequence[Mapping[str, torch.Tensor]], index: int,
                training: bool = False) -> Columns:
        """The page columns of sample ``index`` of ``batch``, in display order: column name ->
        ``Visual`` (drawn by ``util.image_io.visuals_to_images``). test.py saves each column
        as ``images/<name>/``; the training page shows them in a grid (a row per sample).

        ``samples``: the outputs of ``synthesize``, one per sample drawn (test.py's
        ``--num_samples``: ``synthesized_image``, ``synthesized_image_2``, ...), or, with
        ``training``, the one ``generator_loss`` returned. Order: the input label and other
        inputs, then on the test page the outputs before the real references; on the training
        page the image pair (synthesized, real) before the other outputs and references.
        Models with more outputs add columns in ``extra_visuals``.
        """
        inputs, outputs, references = self.extra_visuals(batch, samples[0], index, training)
        columns: Columns = {"input_label": Visual("label", batch["label"][index]), **inputs}
        for k, out in enumerate(samples):
            columns["synthesized_image" + ("" if k == 0 else f"_{k + 1}")] = Visual("image", out["image"][index])
        real: Columns = {}
        if training or batch_flag(batch, "has_image", index, default=True):
            real["real_image"] = Visual("image", batch["image"][index])
        if training:
            return {**columns, **real, **outputs, **references}
        return {**columns, **outputs, **real, **references}

    def extra_visuals(self, batch: Batch, out: Mapping[str, torch.Tensor], index: int,
                      training: bool) -> Tuple[Columns, Columns, Columns]:
        """Columns for outputs beyond ``image`` (from the first sample's ``out``):
        ``(inputs, outputs, references)``, placed as ``visuals`` says. None here."""
        return {}, {}, {}
