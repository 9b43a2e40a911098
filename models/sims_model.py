"""Semi-parametric synthesis, ``--model sims`` (Qi, Chen, Jia, Koltun, "Semi-parametric Image
Synthesis", CVPR 2018).

Test time: for every connected segment of the label map, a real segment of the same class is
retrieved from a bank built from the training photos (``scripts/build_segment_bank.py``),
aligned by a transformation network (``scripts/train_sims_stn.py``), ordered (an ordering
network, ``scripts/train_sims_ordering.py``, or depth) and pasted into a canvas
(``models.sims.canvas.compose_canvas``); the synthesis network turns [canvas, filled mask,
labels] into the image. ``synthesize`` returns ``image`` and ``canvas`` (test.py shows the
canvas next to the label).

The paper's components are the defaults; each has the earlier, lighter variant beside it:

* ``--sims_retrieval paper`` (segments scored by mask IoU in the image frame + context, small
  segments left to the network, pasted at their own place and refined by the transformation
  network ``frame_stn.pth`` that sees [segment RGB, mask, label map]) or ``shape``
  (box-normalized shapes, position-invariant, aligned by the mask-only ``stn.pth``);
* ``--sims_order auto`` (the ordering network ``order.pth`` beside the bank when it exists,
  else depth, else the bank's class counts), ``network``, ``depth`` or ``classes``;
* ``--netG crn`` (cascaded refinement network, the paper's) or ``sims_unet`` (a U-Net);
* ``--sims_objective paper`` (class-masked VGG-19 loss + ``--lambda_semantic`` x semantic
  cross-entropy, no GAN unless ``--sims_gan``; the default with crn) or ``light`` (L1 + VGG +
  GAN + feature matching, ``--no_gan`` drops the GAN; the default with sims_unet);
* ``--sims_canvas paper`` (training canvases stencilled through a retrieved segment's mask,
  colour transfer with p=0.2, elided boundary bands, label-map jitter; stencils come from the
  segment bank when it exists, else from the other photos of the batch) or ``light`` (own masks,
  colour jitter, erosion, dropped segments);
* ``--sims_stages N``: coarse to fine, the epochs split into N stages trained at
  1/2**(N-1), ..., 1/2, 1 of the image size.

Depth orders the pasted segments with ``--sims_order depth`` (or auto without an ordering
network), from ``--sims_depth``:

* ``dataset``: the dataset's depth map of the label map (DatasetError when a sample has none);
* ``generator``: the map predicted from the label map by a UDGAN depth generator,
  ``--sims_depth_checkpoint RUN/latest_net_G_depth.pth`` from a ``--model udgan`` run trained
  on the same label space (same ``--label_nc``, dontcare, instance and ``--cond_inputs`` options);
* ``none``: no depth, the bank's learned class order;
* ``auto`` (default): the generator when ``--sims_depth_checkpoint`` is given, else the
  dataset's depth where a sample has one, else none.
"""
from __future__ import annotations

import argparse
import copy
import os
import zlib
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from models import MODELS
from models.networks.base_network import GENERATORS, add_option_once
from models.pix2pix_model import Batch, Columns, Pix2PixModel, one_hot_labels
from models.sims import PAPER_MIN_AREA_FRAC
from models.sims.frame_stn import FRAME_STN_FILE  # --sims_retrieval paper's transformation network
from models.sims.ordering_net import ORDER_FILE  # the ordering network
from models.sims.simulate import (PaperSimulationConfig, SimulationConfig, Stencil, simulate_canvas,
                                  simulate_canvas_paper, stencils_from_label_maps)
from models.udgan_model import depth_visuals
from util import checkpoint
from util.errors import CheckpointError, DatasetError, OptionError
from util.image_io import Visual

BANK_SCRIPT = "scripts/build_segment_bank.py"
STN_SCRIPT = "scripts/train_sims_stn.py"
ORDER_SCRIPT = "scripts/train_sims_ordering.py"
STN_FILE = "stn.pth"  # --sims_retrieval shape's mask aligner
DEPTH_MODES = ("auto", "dataset", "generator", "none")
RETRIEVAL_MODES = ("paper", "shape")
ORDER_MODES = ("auto", "network", "depth", "classes")
CANVAS_MODES = ("paper", "light")
OBJECTIVES = ("paper", "light")
# Options that decide what the depth generator's input channels mean: they must agree with the
# UDGAN run it comes from, since it sees this model's semantics.
SEMANTIC_OPTIONS = ("label_nc", "contain_dontcare_label", "no_instance", "cond_inputs")
# The UDGAN depth generator's own options, with depthspade's defaults for files without options.
DEPTH_NET_DEFAULTS = {"netG_depth": "unet", "ngf_depth": 32, "depth_num_down": 4}


def masked_pixel_loss(fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The class-masked loss without its VGG layers (``--no_vgg_loss``): its pixel term, on the
    0-255 scale with the paper's weight 1."""
    from models.networks.loss import class_masked_l1
    return class_masked_l1((fake + 1) * 127.5, (real + 1) * 127.5, masks)


def default_bank_dir(opt: argparse.Namespace) -> str:
    return os.path.join(opt.checkpoints_dir, opt.name, "segment_bank")


def load_depth_generator(path: str, opt: argparse.Namespace) -> torch.nn.Module:
    """The UDGAN depth generator in ``path`` (a ``*_net_G_depth.pth``), built from the options
    saved with it and this run's semantics; eval mode, on the CPU.

    ``forward(semantics: (N, semantic_nc, H, W)) -> (N, 1, H, W)`` normalized inverse depth.
    A missing file, another network's file or a different label space is a ``CheckpointError``
    (``util/checkpoint.py``'s strict loading names the options that differ).
    """
    from models.networks import DEPTH_GENERATORS

    what = "--sims_depth_checkpoint"
    blob = checkpoint.read_file(path, what)
    saved = blob.get("options", {}) if isinstance(blob, dict) and blob.get("format") == checkpoint.FORMAT else {}
    differ = checkpoint.option_differences(saved, opt, SEMANTIC_OPTIONS)
    if differ:
        raise CheckpointError(f"{what} {path}: the depth generator was trained on other label inputs: "
                              + ", ".join(differ) + ". Train --model sims with the same label options, "
                              "or use a depth generator trained on this label space")
    if saved and "netG_depth" not in saved:
        raise CheckpointError(f"{what} {path} was written by a --model {saved.get('model', '?')} run without a "
                              "depth generator: pass RUN/latest_net_G_depth.pth of a --model udgan "
                              "(--netG depthspade) run")
    dopt = copy.copy(opt)
    for key, default in DEPTH_NET_DEFAULTS.items():
        setattr(dopt, key, saved.get(key, default))
    try:
        cls = DEPTH_GENERATORS.get(dopt.netG_depth)
    except Exception as e:  # an unknown name saved in the file
        raise CheckpointError(f"{what} {path}: unknown depth generator {dopt.netG_depth!r} ({e})") from None
    cls.check_options(dopt)
    net = cls(dopt)
    # compare with the file's own options: only the depth generator's shape may differ here
    checkpoint.load_network(net, path, {**vars(dopt), **saved, **{k: getattr(dopt, k) for k in DEPTH_NET_DEFAULTS}},
                            "G_depth")
    return net.eval()


@MODELS.register("sims")
class SIMSModel(Pix2PixModel):
    """Pix2PixModel whose generator also sees a canvas: simulated in training, retrieved from
    the segment bank at test time."""

    default_netG = "crn"  # --model sims alone selects the paper's synthesis network

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--bank_dir", type=str, default=None,
                        help="segment bank folder (default: CHECKPOINTS_DIR/NAME/segment_bank; build it "
                             f"with {BANK_SCRIPT}); its {ORDER_FILE}, {FRAME_STN_FILE} and {STN_FILE} too")
        add_option_once(parser, "--sims_retrieval", type=str, default="paper", choices=RETRIEVAL_MODES,
                        help="paper: mask IoU in the image frame + context, segments smaller than "
                             "--sims_min_area left to the network, pasted at their own place and aligned "
                             f"by {FRAME_STN_FILE}; shape: box-normalized shapes anywhere in the image, "
                             f"aligned by {STN_FILE}")
        add_option_once(parser, "--sims_min_area", type=float, default=PAPER_MIN_AREA_FRAC,
                        help="--sims_retrieval / --sims_canvas paper: smallest segment (fraction of the "
                             "image area) that gets a real segment; the paper's 1000 px at 256x512")
        add_option_once(parser, "--no_stn", action="store_true",
                        help="paste retrieved segments without the alignment network (frame or box "
                             "placement only)")
        add_option_once(parser, "--sims_top_k", type=int, default=1,
                        help="retrieval: choose each segment among its K best bank matches (seeded)")
        add_option_once(parser, "--sims_order", type=str, default="auto", choices=ORDER_MODES,
                        help=f"painting order of the pasted segments: network ({ORDER_FILE} beside the "
                             "bank, scripts/train_sims_ordering.py), depth (--sims_depth), classes (the "
                             "bank's pairwise class counts); auto = network when its file exists, else "
                             "depth where known, else classes")
        add_option_once(parser, "--sims_depth", type=str, default="auto", choices=DEPTH_MODES,
                        help="depth that orders the pasted segments (farther first) under --sims_order "
                             "depth/auto: the dataset's, a UDGAN depth generator's "
                             "(--sims_depth_checkpoint), none (the bank's class order); auto = generator "
                             "if a checkpoint is given, else dataset where a sample has depth, else none")
        add_option_once(parser, "--sims_depth_checkpoint", type=str, default=None,
                        help="a UDGAN depth generator, e.g. checkpoints/RUN/latest_net_G_depth.pth "
                             "from a --model udgan run on the same label space")
        if not is_train:
            return parser
        parser.set_defaults(lambda_L1=10.0)
        add_option_once(parser, "--sims_objective", type=str, default=None, choices=OBJECTIVES,
                        help="paper: class-masked VGG-19 loss + --lambda_semantic x semantic cross-entropy "
                             "(GAN only with --sims_gan); light: --lambda_L1 + VGG + GAN (--no_gan drops "
                             "it). Default: paper with --netG crn, light otherwise")
        add_option_once(parser, "--lambda_semantic", type=float, default=10.0,
                        help="--sims_objective paper: weight of the semantic cross-entropy (the paper's 10)")
        add_option_once(parser, "--lambda_masked_vgg", type=float, default=1.0,
                        help="--sims_objective paper: weight of the class-masked VGG loss (its pixel "
                             "term alone with --no_vgg_loss)")
        add_option_once(parser, "--sims_gan", action="store_true",
                        help="--sims_objective paper: add the GAN and feature-matching terms (--netD)")
        add_option_once(parser, "--no_gan", action="store_true",
                        help="--sims_objective light: train with L1 (+ VGG) only, no GAN / feature matching")
        add_option_once(parser, "--sims_stages", type=int, default=2,
                        help="coarse to fine: the epochs split into N stages, trained at 1/2**(N-1), ..., "
                             "1/2, 1 of the image size (the paper trains 256, then 512, then 1024 wide)")
        add_option_once(parser, "--sims_canvas", type=str, default="paper", choices=CANVAS_MODES,
                        help="training canvas: paper (stencil through a retrieved segment's mask, colour "
                             "transfer p=0.2, elided boundary bands, label jitter) or light (own mask, "
                             "colour jitter, erosion, dropped segments)")
        add_option_once(parser, "--sims_drop_prob", type=float, default=0.25,
                        help="--sims_canvas light: chance that a segment is left out (a hole)")
        add_option_once(parser, "--sims_min_erosion", type=int, default=1,
                        help="--sims_canvas light: smallest boundary erosion of a segment, pixels")
        add_option_once(parser, "--sims_max_erosion", type=int, default=3,
                        help="--sims_canvas light: largest boundary erosion of a segment, pixels")
        add_option_once(parser, "--sims_color_jitter", type=float, default=0.2,
                        help="--sims_canvas light: colour transfer strength (contrast 1 +- j, shift "
                             "+- j per channel); 0 = the photo's own colours")
        return parser

    def __init__(self, opt: argparse.Namespace) -> None:
        if opt.label_nc == 0:
            raise OptionError("--model sims retrieves segments per label class and needs a label map: "
                              "set --label_nc to the number of classes (it cannot be 0)")
        if getattr(opt, "sims_top_k", 1) < 1:
            raise OptionError(f"--sims_top_k must be at least 1 (got {opt.sims_top_k})")
        if not 0.0 <= getattr(opt, "sims_min_area", PAPER_MIN_AREA_FRAC) < 1.0:
            raise OptionError(f"--sims_min_area is a fraction of the image area in [0, 1) (got {opt.sims_min_area})")
        mode = getattr(opt, "sims_depth", "auto")
        if mode == "generator" and not getattr(opt, "sims_depth_checkpoint", None):
            raise OptionError("--sims_depth generator needs --sims_depth_checkpoint PATH to a depth generator "
                              "(RUN/latest_net_G_depth.pth of a --model udgan run)")
        if mode in ("dataset", "none") and getattr(opt, "sims_depth_checkpoint", None):
            raise OptionError(f"--sims_depth {mode} does not use --sims_depth_checkpoint: drop one of them "
                              "(or use --sims_depth generator / auto)")
        self.objective = self.resolve_objective(opt) if opt.isTrain else None
        if opt.isTrain and getattr(opt, "sims_stages", 1) < 1:
            raise OptionError(f"--sims_stages must be at least 1 (got {opt.sims_stages})")
        super().__init__(opt)
        if opt.isTrain:
            self._init_training(opt)
        self._bank = None
        self._stn = None
        self._order_net = None
        self._train_bank: Optional[object] = None
        self._train_bank_checked = False
        self._cached: Optional[tuple] = None  # (input label tensor, the batch at the stage's size)
        self._canvas_cache: Optional[tuple] = None  # (label tensor, (canvas, filled, void))
        self.epoch = 1
        # Not in networks(): it is read from another run's file, never trained or saved here.
        self.netG_depth: Optional[torch.nn.Module] = None
        if not opt.isTrain and getattr(opt, "sims_depth_checkpoint", None):
            self.netG_depth = load_depth_generator(opt.sims_depth_checkpoint, opt)  # errors before synthesis
        if opt.isTrain and getattr(opt, "eval_freq", 0) > 0:
            # --eval_freq synthesizes the validation split, which needs the bank: fail now, not mid-run
            self.segment_bank()

    def perceptual_loss(self, opt: argparse.Namespace) -> Optional[torch.nn.Module]:
        """No plain VGG term with the paper objective: its class-masked loss replaces it."""
        return None if self.objective == "paper" else super().perceptual_loss(opt)

    @staticmethod
    def resolve_objective(opt: argparse.Namespace) -> str:
        """``--sims_objective``, or its default for the generator (paper with crn)."""
        objective = getattr(opt, "sims_objective", None) or ("paper" if opt.netG == "crn" else "light")
        if objective == "paper" and not hasattr(GENERATORS.get(opt.netG), "forward_with_semantics"):
            raise OptionError(f"--sims_objective paper needs semantic logits from the generator, which --netG "
                              f"{opt.netG} does not give: use --netG crn, or --sims_objective light")
        if objective == "paper" and getattr(opt, "no_gan", False):
            raise OptionError("--no_gan belongs to --sims_objective light; the paper objective has no GAN "
                              "unless --sims_gan: drop --no_gan")
        if objective == "light" and getattr(opt, "sims_gan", False):
            raise OptionError("--sims_gan belongs to --sims_objective paper; the light objective has its GAN "
                              "on unless --no_gan: drop --sims_gan")
        return objective

    def _init_training(self, opt: argparse.Namespace) -> None:
        if self.objective == "paper":
            self.use_gan = bool(getattr(opt, "sims_gan", False))
            from models.networks.loss import ClassMaskedVGGLoss
            # --no_vgg_loss keeps the loss's pixel term, which needs no VGG weights
            self.criterionMaskedVGG = masked_pixel_loss if opt.no_vgg_loss else ClassMaskedVGGLoss(opt.vgg_weights)
        else:
            self.use_gan = not getattr(opt, "no_gan", False)
            if not self.use_gan and self.criterionVGG is None and getattr(opt, "lambda_L1", 0) <= 0:
                raise OptionError("--model sims with --no_gan, --no_vgg_loss and --lambda_L1 0 has no loss "
                                  "left: keep at least one")
        try:
            self.sim_config = SimulationConfig(
                drop_prob=opt.sims_drop_prob, min_erosion=opt.sims_min_erosion,
                max_erosion=opt.sims_max_erosion, color_jitter=opt.sims_color_jitter,
                ignore_ids=self.ignore_ids())
            self.paper_config = PaperSimulationConfig(min_area_frac=opt.sims_min_area,
                                                      ignore_ids=self.ignore_ids())
        except ValueError as e:
            raise OptionError(f"--model sims training canvas options: {e}") from None

    def ignore_ids(self) -> Tuple[int, ...]:
        """Label ids that are no segment: dontcare (``label_nc`` in batches, 255 in files)."""
        return (self.opt.label_nc, 255) if self.opt.contain_dontcare_label else (255,)

    # ------------------------------------------------------------------ coarse to fine
    def set_epoch(self, epoch: int) -> None:
        """The trainer's call at the start of each (1-based) epoch: picks the ``--sims_stages`` stage."""
        self.epoch = int(epoch)

    def stage_scale(self) -> int:
        """How much this epoch's training images are downscaled (1 in the last stage)."""
        stages = int(getattr(self.opt, "sims_stages", 1))
        total = max(1, int(getattr(self.opt, "niter", 1)) + int(getattr(self.opt, "niter_decay", 0)))
        stage = min(stages - 1, (max(self.epoch, 1) - 1) * stages // total)
        return 2 ** (stages - 1 - stage)

    def stage_batch(self, batch: Batch) -> Batch:
        """``batch`` at this stage's resolution: maps of ids (labels, instances) by nearest
        neighbour, images and continuous maps by antialiased bilinear resizing. The same input
        batch gives the same object (the G and D steps share it, and its canvas)."""
        scale = self.stage_scale()
        if scale == 1:
            return batch
        if self._cached is not None and self._cached[0] is batch["label"]:
            return self._cached[1]
        h, w = batch["label"].shape[-2:]
        size = (max(1, h // scale), max(1, w // scale))
        out = dict(batch)
        for key, value in batch.items():
            if not (isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[-2:] == (h, w)):
                continue
            if value.is_floating_point() and key not in ("label", "instance"):
                out[key] = F.interpolate(value.float(), size=size, mode="bilinear", align_corners=False,
                                         antialias=True).to(value.dtype)
            else:
                out[key] = F.interpolate(value.float(), size=size, mode="nearest").to(value.dtype)
        self._cached = (batch["label"], out)
        return out

    # ------------------------------------------------------------------ canvases
    @torch.no_grad()
    def training_canvas(self, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Simulated canvases of the batch's photos: ``canvas (N, 3, H, W)``, ``filled (N, 1, H, W)``
        and ``void (N, 1, H, W)`` bool (input-label pixels blanked by the paper's label jitter; all
        False for the light canvas), on the device.

        The seed comes from torch's global generator (saved with the training state, so a resumed
        run draws the same canvases). The generator and discriminator steps of one batch share
        the canvas.
        """
        label = batch["label"]
        if self._canvas_cache is not None and self._canvas_cache[0] is label:
            return self._canvas_cache[1]
        image = batch["image"].to(self.device, non_blocking=True).float()
        seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        generator = torch.Generator().manual_seed(seed)
        n = image.size(0)
        if getattr(self.opt, "sims_canvas", "light") == "paper":
            stencils = self.training_stencils(batch, seed)
            triples = [simulate_canvas_paper(image[i], label[i, 0], generator, self.paper_config, stencils[i])
                       for i in range(n)]
            canvas = torch.stack([t[0] for t in triples])
            filled = torch.stack([t[1] for t in triples])
            void = torch.stack([torch.as_tensor(t[2]) for t in triples]).to(self.device)
        else:
            pairs = [simulate_canvas(image[i], label[i], generator, self.sim_config) for i in range(n)]
            canvas = torch.stack([p[0] for p in pairs])
            filled = torch.stack([p[1] for p in pairs])
            void = torch.zeros_like(filled, dtype=torch.bool)
        self._canvas_cache = (label, (canvas, filled, void))
        return canvas, filled, void

    def training_bank(self):
        """The segment bank for the paper's training canvases, or None (then stencils come from
        the other photos of each batch); looked for once, at the first batch."""
        if not self._train_bank_checked:
            self._train_bank_checked = True
            from models.sims.bank import SegmentBank
            folder = getattr(self.opt, "bank_dir", None) or default_bank_dir(self.opt)
            if os.path.isdir(folder):
                try:
                    self._train_bank = SegmentBank.load(folder)
                except (OSError, ValueError, KeyError, DatasetError) as e:
                    raise DatasetError(f"--sims_canvas paper: cannot read the segment bank in {folder} ({e}). "
                                       f"Rebuild it with python {BANK_SCRIPT}, or move it away (stencils then "
                                       "come from the other photos of each batch)") from None
            else:
                print(f"--sims_canvas paper: no segment bank at {folder}; training stencils come from the "
                      f"other photos of each batch (build the bank first with python {BANK_SCRIPT} to "
                      "draw them from the whole training split, as the paper does)", flush=True)
        return self._train_bank

    def training_stencils(self, batch: Batch, seed: int) -> list:
        """Per sample, the ``StencilSource`` of the paper's canvas simulation: same-class segments
        of OTHER training photos, best mask IoU in the image frame (from the bank, else the batch)."""
        labels = [batch["label"][i, 0].cpu().numpy().astype(np.int64) for i in range(batch["label"].size(0))]
        bank = self.training_bank()
        if bank is None:
            images = [batch["image"][i].float().cpu() for i in range(len(labels))]
            return [stencils_from_label_maps(labels[:i] + labels[i + 1:], images[:i] + images[i + 1:],
                                             self.ignore_ids()) for i in range(len(labels))]
        from models.sims.retrieval import frame_stencil
        paths = list(batch.get("path", [None] * len(labels)))
        rng = np.random.default_rng(seed)

        def source_for(path):
            exclude = bank.source_index(path) if path is not None else None

            def stencil(class_id: int, mask: np.ndarray) -> Optional[Stencil]:
                found = frame_stencil(bank, class_id, mask, exclude, rng)
                return None if found is None else Stencil(*found)
            return stencil
        return [source_for(p) for p in paths]

    def segment_bank(self):
        """The segment bank and the alignment network (None with --no_stn), loaded once."""
        if self._bank is not None:
            return self._bank, self._stn
        from models.sims.bank import SegmentBank

        opt = self.opt
        folder = getattr(opt, "bank_dir", None) or default_bank_dir(opt)
        how = (f"python {BANK_SCRIPT} --name {opt.name} --checkpoints_dir {opt.checkpoints_dir} "
               "with the same dataset options as training (--dataset_mode, --dataroot, --label_nc, sizes)")
        if not os.path.isdir(folder):
            raise OptionError(f"--model sims: no segment bank at {folder} (--bank_dir). Build it with: {how}")
        try:
            bank = SegmentBank.load(folder)
        except (OSError, ValueError, KeyError, DatasetError) as e:
            raise DatasetError(f"--model sims: cannot read the segment bank in {folder} ({e}). "
                               f"Rebuild it with: {how}") from None
        bank_nc = getattr(bank, "label_nc", None)
        if bank_nc is not None and int(bank_nc) != opt.label_nc:
            raise OptionError(f"--model sims: the segment bank in {folder} was built with --label_nc {bank_nc} "
                              f"but this run has --label_nc {opt.label_nc}. Rebuild it with: {how}")
        if len(bank) == 0:
            raise DatasetError(f"--model sims: the segment bank in {folder} is empty. Rebuild it with: {how}")
        stn = None
        if not getattr(opt, "no_stn", False):
            stn = self._load_stn(folder)
        self._bank, self._stn = bank, stn
        return bank, stn

    def _load_stn(self, folder: str):
        """The alignment network of ``--sims_retrieval``: the FrameSTN (paper) or the mask STN (shape)."""
        paper = getattr(self.opt, "sims_retrieval", "paper") == "paper"
        path = os.path.join(folder, FRAME_STN_FILE if paper else STN_FILE)
        if not os.path.isfile(path):
            raise OptionError(f"--model sims --sims_retrieval {'paper' if paper else 'shape'}: no alignment network "
                              f"at {path}. Train it with python {STN_SCRIPT} --stn {'paper' if paper else 'shape'} "
                              f"--bank_dir {folder} (paper: with the training dataset options), or pass --no_stn")
        if paper:
            from models.sims.frame_stn import FrameSTN
            return FrameSTN.load(path, num_classes=self.opt.label_nc).eval()  # names --label_nc on a mismatch
        from models.sims.alignment import AffineSTN
        return AffineSTN.load(path).eval()

    def order_network(self):
        """The ordering network of ``--sims_order`` (network, or auto when its file exists), else None."""
        mode = getattr(self.opt, "sims_order", "auto")
        if mode in ("depth", "classes"):
            return None
        if self._order_net is not None:
            return self._order_net
        folder = getattr(self.opt, "bank_dir", None) or default_bank_dir(self.opt)
        path = os.path.join(folder, ORDER_FILE)
        if not os.path.isfile(path):
            if mode == "network":
                raise OptionError(f"--sims_order network: no ordering network at {path}. Train it with python "
                                  f"{ORDER_SCRIPT} --bank_dir {folder} (with the training dataset options), or use "
                                  "--sims_order depth / classes")
            return None
        from models.sims.ordering_net import OrderingNet
        self._order_net = OrderingNet.load(path, num_classes=self.opt.label_nc).eval()  # names a mismatch
        return self._order_net

    def depth_generator(self) -> torch.nn.Module:
        """The UDGAN depth generator of ``--sims_depth_checkpoint`` on this model's device."""
        if self.netG_depth is None:
            self.netG_depth = load_depth_generator(self.opt.sims_depth_checkpoint, self.opt)
        return self.netG_depth.to(self.device).eval()

    @torch.no_grad()
    def ordering_depth(self, batch: Batch, semantics: torch.Tensor) -> Tuple[list, Dict[str, torch.Tensor]]:
        """Per sample, the depth map ``(H, W)`` float32 (numpy) that orders its segments, or None;
        and what to show: ``{"depth": (N, 1, H, W)}`` (generated) or ``{"input_depth": ...}``
        (the dataset's, when every sample has one). See ``--sims_depth``."""
        opt = self.opt
        n = semantics.size(0)
        mode = getattr(opt, "sims_depth", "auto")
        has = torch.as_tensor(batch.get("has_depth", torch.zeros(n, dtype=torch.bool))).reshape(-1).bool()
        if "depth" not in batch:
            has = torch.zeros(n, dtype=torch.bool)
        use_generator = mode == "generator" or (mode == "auto" and bool(getattr(opt, "sims_depth_checkpoint", None)))
        if use_generator:
            net = self.depth_generator()
            depth = net(semantics.to(next(net.parameters()).dtype)).float()
            return [d[0].cpu().numpy() for d in depth], {"depth": depth}
        if mode == "none":
            return [None] * n, {}
        if mode == "dataset" and not bool(has.all()):
            paths = [p for p, ok in zip(batch.get("path", []), has.tolist()) if not ok]
            raise DatasetError(f"--sims_depth dataset: sample {paths[0] if paths else '?'} has no depth map. Add "
                               "depth maps to the dataset, or use --sims_depth generator "
                               "--sims_depth_checkpoint RUN/latest_net_G_depth.pth, or --sims_depth none")
        maps = [batch["depth"][i, 0].float().cpu().numpy() if bool(has[i]) else None for i in range(n)]
        shown = {"input_depth": batch["depth"].float().to(self.device)} if n and bool(has.all()) else {}
        return maps, shown

    @torch.no_grad()
    def retrieval_canvas(self, batch: Batch,
                         depths: Optional[list] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Canvases composed from the bank: ``(N, 3, H, W)``, ``(N, 1, H, W)`` on the device.

        ``depths``: per sample an ``(H, W)`` map ordering the pasted segments, or None (the bank's
        learned class order); see ``ordering_depth``. Each label map's retrieval is seeded by
        ``--seed`` and its path, so results do not depend on the batch it is in.
        """
        from models.sims.canvas import compose_canvas

        bank, stn = self.segment_bank()
        order_net = self.order_network()
        labels = batch["label"][:, 0].cpu().numpy()
        n = labels.shape[0]
        depths = depths if depths is not None else [None] * n
        paths = list(batch.get("path", [str(i) for i in range(n)]))
        paper = getattr(self.opt, "sims_retrieval", "paper") == "paper"
        extra = {"order_net": order_net} if order_net is not None else {}
        if paper:
            extra.update(retrieval="paper", frame_stn=stn, min_area_frac=self.opt.sims_min_area)
        canvases, filleds = [], []
        for i in range(n):
            seed = (zlib.crc32(str(paths[i]).encode()) + 1_000_003 * int(self.opt.seed)) % (2 ** 31)
            canvas, filled = compose_canvas(bank, labels[i].astype(np.int64), depths[i],
                                            stn=None if paper else stn, top_k=self.opt.sims_top_k,
                                            seed=seed, **extra)
            canvases.append(torch.as_tensor(canvas, dtype=torch.float32).reshape(3, *labels.shape[1:]))
            filleds.append(torch.as_tensor(filled, dtype=torch.float32).reshape(1, *labels.shape[1:]))
        return torch.stack(canvases).to(self.device), torch.stack(filleds).to(self.device)

    # ------------------------------------------------------------------ generation
    def generate(self, semantics: torch.Tensor, z: Optional[torch.Tensor],
                 batch: Optional[Batch] = None) -> Dict[str, torch.Tensor]:
        """Training: ``{"image", "canvas"}`` (+ ``logits`` with the paper objective) from the
        simulated canvas of the batch's photos; the label pixels the paper's jitter voids are
        blanked in ``semantics``."""
        if batch is None:
            raise ValueError("SIMSModel.generate needs the batch (its photos make the canvas)")
        canvas, filled, void = self.training_canvas(batch)
        if bool(void.any()):
            semantics = semantics * (~void).to(semantics.dtype)
        if self.objective == "paper":
            image, logits = self.netG(semantics, canvas, filled, with_semantics=True)
            return {"image": image, "canvas": canvas, "logits": logits}
        return {"image": self.netG(semantics, canvas, filled), "canvas": canvas}

    @torch.no_grad()
    def synthesize(self, batch: Batch, z: Optional[torch.Tensor] = None,
                   use_style_image: bool = True) -> Dict[str, torch.Tensor]:
        """Test time: ``{"image": (N, 3, H, W), "canvas": (N, 3, H, W)}`` in [-1, 1], the canvas
        composed from the segment bank (holes 0), plus the depth that ordered it: ``depth``
        (N, 1, H, W) from the depth generator or ``input_depth`` (the dataset's).
        ``z`` / ``use_style_image`` are ignored."""
        semantics, _ = self.preprocess_input(batch)
        order = getattr(self.opt, "sims_order", "auto")
        if order == "classes" or self.order_network() is not None:
            depths, shown = [None] * semantics.size(0), {}
        else:
            depths, shown = self.ordering_depth(batch, semantics)
        canvas, filled = self.retrieval_canvas(batch, depths)
        image = self.netG(semantics, canvas, filled).clamp(-1, 1)  # crn's output is linear, as the paper's
        return {"image": image, "canvas": canvas, **shown}

    def extra_visuals(self, batch: Batch, out: Mapping[str, torch.Tensor], index: int,
                      training: bool) -> Tuple[Columns, Columns, Columns]:
        """The canvas the image was made from (simulated in training, retrieved at test time)
        after the label, then the depth that ordered it (see ``depth_visuals``)."""
        inputs, outputs, references = depth_visuals(batch, out, index, training)
        return {"canvas": Visual("image", out["canvas"][index]), **inputs}, outputs, references

    # ------------------------------------------------------------------ losses
    def generator_loss(self, batch: Batch) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """At this stage's resolution (``--sims_stages``): the light objective is the framework's
        (L1, VGG, GAN, feature matching); the paper's is the class-masked VGG loss plus the
        semantic cross-entropy of the generator's logits (+ GAN terms with ``--sims_gan``).
        The outputs for display are brought back to the batch's size."""
        staged = self.stage_batch(batch)
        if self.objective == "light":
            losses, outputs = super().generator_loss(staged)
        else:
            losses, outputs = self._paper_losses(staged)
        return losses, self._display_size(outputs, batch["label"].shape[-2:])

    def _paper_losses(self, batch: Batch) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        opt = self.opt
        semantics, real = self.preprocess_input(batch)
        outputs = self.generate(semantics, None, batch)
        fake = outputs["image"]
        losses: Dict[str, torch.Tensor] = {}
        if self.use_gan:
            losses.update(self.adversarial_losses(semantics, fake, real))
        target = batch["label"].to(self.device, non_blocking=True).long()[:, 0]
        classes = outputs["logits"].size(1)
        masks = one_hot_labels(target[:, None].clamp(0, classes), classes + 1)[:, :classes]  # ignored ids: none
        losses["MaskedVGG"] = self.criterionMaskedVGG(fake.float(), real.float(), masks.float()) * opt.lambda_masked_vgg
        ignored = (target < 0) | (target >= classes)
        losses["Semantic"] = F.cross_entropy(outputs["logits"].float(), target.masked_fill(ignored, -100),
                                             ignore_index=-100) * opt.lambda_semantic
        return losses, {k: v for k, v in outputs.items() if k != "logits"}

    @staticmethod
    def _display_size(outputs: Dict[str, torch.Tensor], size) -> Dict[str, torch.Tensor]:
        return {k: (F.interpolate(v.float(), size=tuple(size), mode="nearest").to(v.dtype)
                    if v.dim() == 4 and tuple(v.shape[-2:]) != tuple(size) else v)
                for k, v in outputs.items() if k != "logits"}

    def discriminator_loss(self, batch: Batch) -> Dict[str, torch.Tensor]:
        batch = self.stage_batch(batch)
        if self.use_gan:
            return super().discriminator_loss(batch)
        # no GAN: the trainer still steps D's optimizer; a zero loss through a real forward
        # (DDP expects one) leaves D unchanged (Adam's step is 0 for zero gradients).
        semantics, real = self.preprocess_input(batch)
        pred = self.netD(torch.cat([semantics, real], dim=1))
        zero = sum(t.float().sum() for scale in pred for t in scale) * 0.0
        return {"D_unused": zero}
