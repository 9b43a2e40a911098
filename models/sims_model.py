"""Semi-parametric synthesis, ``--model sims`` (Qi, Chen, Jia, Koltun, "Semi-parametric Image
Synthesis", CVPR 2018).

Test time: for every connected segment of the label map, a real segment of the same class is
retrieved from a bank built from the training photos (``scripts/build_segment_bank.py``),
aligned (box fit + optional STN, ``scripts/train_sims_stn.py``), ordered by depth and pasted
into a canvas (``models.sims.canvas.compose_canvas``); the synthesis network ``--netG sims``
turns [canvas, filled mask, labels] into the image. ``synthesize`` returns ``image`` and
``canvas`` (test.py shows the canvas next to the label).

Training: the canvas is simulated from the training photo itself
(``models.sims.simulate``: own pixels, colour transfer, eroded boundaries, dropped segments),
so the network learns to repair what retrieval gets wrong. Losses:

* ``L1`` to the real photo, ``--lambda_L1`` (default 10 here; pix2pix's 100 goes with a plain
  GAN and no perceptual term, here the VGG term carries most of the reconstruction);
* ``VGG`` perceptual loss (``--lambda_vgg``, the framework's; ``--no_vgg_loss`` without its
  weights), SIMS's main loss;
* ``GAN`` + ``GAN_Feat`` with the framework's discriminator (``--netD``, ``--gan_mode``), on by
  default because it sharpens the in-painted holes that L1/VGG leave blurry at short
  schedules; ``--no_gan`` turns both off (the discriminator is still built, because the trainer
  always steps two optimizers, but it gets a zero loss and never changes).

Depth orders the pasted segments at test time (``--sims_depth``):

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

from models import MODELS
from models.networks.base_network import add_option_once
from models.networks.generators import sims as _sims_generator  # noqa: F401  (registers netG "sims")
from models.pix2pix_model import Batch, Columns, Pix2PixModel
from models.sims.simulate import SimulationConfig, simulate_canvas
from models.udgan_model import depth_visuals
from util import checkpoint
from util.errors import CheckpointError, DatasetError, OptionError
from util.image_io import Visual

BANK_SCRIPT = "scripts/build_segment_bank.py"
STN_SCRIPT = "scripts/train_sims_stn.py"
STN_FILE = "stn.pth"
DEPTH_MODES = ("auto", "dataset", "generator", "none")
# Options that decide what the depth generator's input channels mean: they must agree with the
# UDGAN run it comes from, since it sees this model's semantics.
SEMANTIC_OPTIONS = ("label_nc", "contain_dontcare_label", "no_instance", "cond_inputs")
# The UDGAN depth generator's own options, with depthspade's defaults for files without options.
DEPTH_NET_DEFAULTS = {"netG_depth": "unet", "ngf_depth": 32, "depth_num_down": 4}


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

    default_netG = "sims"  # --model sims alone selects its generator (options resolve it)

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--bank_dir", type=str, default=None,
                        help="segment bank folder for synthesis (default: CHECKPOINTS_DIR/NAME/"
                             f"segment_bank; build it with {BANK_SCRIPT})")
        add_option_once(parser, "--no_stn", action="store_true",
                        help="place retrieved segments by bounding-box fit only, without the "
                             f"bank's {STN_FILE} alignment network")
        add_option_once(parser, "--sims_top_k", type=int, default=1,
                        help="retrieval: choose each segment among its K best bank matches (seeded)")
        add_option_once(parser, "--sims_depth", type=str, default="auto", choices=DEPTH_MODES,
                        help="depth that orders the pasted segments (farther first): the dataset's, a "
                             "UDGAN depth generator's (--sims_depth_checkpoint), none (the bank's "
                             "class order); auto = generator if a checkpoint is given, else dataset "
                             "where a sample has depth, else none")
        add_option_once(parser, "--sims_depth_checkpoint", type=str, default=None,
                        help="a UDGAN depth generator, e.g. checkpoints/RUN/latest_net_G_depth.pth "
                             "from a --model udgan run on the same label space")
        if not is_train:
            return parser
        parser.set_defaults(lambda_L1=10.0)
        add_option_once(parser, "--no_gan", action="store_true",
                        help="--model sims: train with L1 (+ VGG) only, no GAN / feature matching")
        add_option_once(parser, "--sims_drop_prob", type=float, default=0.25,
                        help="training canvas: chance that a segment is left out (a hole)")
        add_option_once(parser, "--sims_min_erosion", type=int, default=1,
                        help="training canvas: smallest boundary erosion of a segment, pixels")
        add_option_once(parser, "--sims_max_erosion", type=int, default=3,
                        help="training canvas: largest boundary erosion of a segment, pixels")
        add_option_once(parser, "--sims_color_jitter", type=float, default=0.2,
                        help="training canvas: colour transfer strength (contrast 1 +- j, shift "
                             "+- j per channel); 0 = the photo's own colours")
        return parser

    def __init__(self, opt: argparse.Namespace) -> None:
        if opt.label_nc == 0:
            raise OptionError("--model sims retrieves segments per label class and needs a label map: "
                              "set --label_nc to the number of classes (it cannot be 0)")
        if getattr(opt, "sims_top_k", 1) < 1:
            raise OptionError(f"--sims_top_k must be at least 1 (got {opt.sims_top_k})")
        mode = getattr(opt, "sims_depth", "auto")
        if mode == "generator" and not getattr(opt, "sims_depth_checkpoint", None):
            raise OptionError("--sims_depth generator needs --sims_depth_checkpoint PATH to a depth generator "
                              "(RUN/latest_net_G_depth.pth of a --model udgan run)")
        if mode in ("dataset", "none") and getattr(opt, "sims_depth_checkpoint", None):
            raise OptionError(f"--sims_depth {mode} does not use --sims_depth_checkpoint: drop one of them "
                              "(or use --sims_depth generator / auto)")
        super().__init__(opt)
        self.use_gan = opt.isTrain and not getattr(opt, "no_gan", False)
        if opt.isTrain:
            if not self.use_gan and self.criterionVGG is None and getattr(opt, "lambda_L1", 0) <= 0:
                raise OptionError("--model sims with --no_gan, --no_vgg_loss and --lambda_L1 0 has no loss "
                                  "left: keep at least one")
            try:
                self.sim_config = SimulationConfig(
                    drop_prob=opt.sims_drop_prob, min_erosion=opt.sims_min_erosion,
                    max_erosion=opt.sims_max_erosion, color_jitter=opt.sims_color_jitter,
                    ignore_ids=self.ignore_ids())
            except ValueError as e:
                raise OptionError(f"--sims_drop_prob / --sims_min_erosion / --sims_max_erosion / "
                                  f"--sims_color_jitter: {e}") from None
        self._bank = None
        self._stn = None
        self._cached: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        # Not in networks(): it is read from another run's file, never trained or saved here.
        self.netG_depth: Optional[torch.nn.Module] = None
        if not opt.isTrain and getattr(opt, "sims_depth_checkpoint", None):
            self.netG_depth = load_depth_generator(opt.sims_depth_checkpoint, opt)  # errors before synthesis
        if opt.isTrain and getattr(opt, "eval_freq", 0) > 0:
            # --eval_freq synthesizes the validation split, which needs the bank: fail now, not mid-run
            self.segment_bank()

    def ignore_ids(self) -> Tuple[int, ...]:
        """Label ids that are no segment: dontcare (``label_nc`` in batches, 255 in files)."""
        return (self.opt.label_nc, 255) if self.opt.contain_dontcare_label else (255,)

    # ------------------------------------------------------------------ canvases
    @torch.no_grad()
    def training_canvas(self, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """Simulated canvases of the batch's photos: ``(N, 3, H, W)``, ``(N, 1, H, W)`` on the device.

        The seed comes from torch's global generator (saved with the training state, so a resumed
        run draws the same canvases). The generator and discriminator steps of one batch share
        the canvas.
        """
        label = batch["label"]
        if self._cached is not None and self._cached[0] is label:
            return self._cached[1], self._cached[2]
        image = batch["image"].to(self.device, non_blocking=True).float()
        seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        generator = torch.Generator().manual_seed(seed)
        pairs = [simulate_canvas(image[i], label[i], generator, self.sim_config) for i in range(image.size(0))]
        canvas = torch.stack([p[0] for p in pairs])
        filled = torch.stack([p[1] for p in pairs])
        self._cached = (label, canvas, filled)
        return canvas, filled

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
            stn = self._load_stn(os.path.join(folder, STN_FILE))
        self._bank, self._stn = bank, stn
        return bank, stn

    def _load_stn(self, path: str):
        if not os.path.isfile(path):
            raise OptionError(f"--model sims: no alignment network at {path}. Train it with "
                              f"python {STN_SCRIPT} --bank_dir {os.path.dirname(path)}, or pass --no_stn "
                              "(bounding-box fit only)")
        from models.sims.alignment import AffineSTN
        return AffineSTN.load(path).eval()

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
        labels = batch["label"][:, 0].cpu().numpy()
        n = labels.shape[0]
        depths = depths if depths is not None else [None] * n
        paths = list(batch.get("path", [str(i) for i in range(n)]))
        canvases, filleds = [], []
        for i in range(n):
            seed = (zlib.crc32(str(paths[i]).encode()) + 1_000_003 * int(self.opt.seed)) % (2 ** 31)
            canvas, filled = compose_canvas(bank, labels[i].astype(np.int64), depths[i], stn=stn,
                                            top_k=self.opt.sims_top_k, seed=seed)
            canvases.append(torch.as_tensor(canvas, dtype=torch.float32).reshape(3, *labels.shape[1:]))
            filleds.append(torch.as_tensor(filled, dtype=torch.float32).reshape(1, *labels.shape[1:]))
        return torch.stack(canvases).to(self.device), torch.stack(filleds).to(self.device)

    # ------------------------------------------------------------------ generation
    def generate(self, semantics: torch.Tensor, z: Optional[torch.Tensor],
                 batch: Optional[Batch] = None) -> Dict[str, torch.Tensor]:
        """Training: ``{"image", "canvas"}`` from the simulated canvas of the batch's photos."""
        if batch is None:
            raise ValueError("SIMSModel.generate needs the batch (its photos make the canvas)")
        canvas, filled = self.training_canvas(batch)
        return {"image": self.netG(semantics, canvas, filled), "canvas": canvas}

    @torch.no_grad()
    def synthesize(self, batch: Batch, z: Optional[torch.Tensor] = None,
                   use_style_image: bool = True) -> Dict[str, torch.Tensor]:
        """Test time: ``{"image": (N, 3, H, W), "canvas": (N, 3, H, W)}`` in [-1, 1], the canvas
        composed from the segment bank (holes 0), plus the depth that ordered it: ``depth``
        (N, 1, H, W) from the depth generator or ``input_depth`` (the dataset's).
        ``z`` / ``use_style_image`` are ignored."""
        semantics, _ = self.preprocess_input(batch)
        depths, shown = self.ordering_depth(batch, semantics)
        canvas, filled = self.retrieval_canvas(batch, depths)
        return {"image": self.netG(semantics, canvas, filled), "canvas": canvas, **shown}

    def extra_visuals(self, batch: Batch, out: Mapping[str, torch.Tensor], index: int,
                      training: bool) -> Tuple[Columns, Columns, Columns]:
        """The canvas the image was made from (simulated in training, retrieved at test time)
        after the label, then the depth that ordered it (see ``depth_visuals``)."""
        inputs, outputs, references = depth_visuals(batch, out, index, training)
        return {"canvas": Visual("image", out["canvas"][index]), **inputs}, outputs, references

    # ------------------------------------------------------------------ losses
    def discriminator_loss(self, batch: Batch) -> Dict[str, torch.Tensor]:
        if self.use_gan:
            return super().discriminator_loss(batch)
        # --no_gan: the trainer still steps D's optimizer; a zero loss through a real forward
        # (DDP expects one) leaves D unchanged (Adam's step is 0 for zero gradients).
        semantics, real = self.preprocess_input(batch)
        pred = self.netD(torch.cat([semantics, real], dim=1))
        zero = sum(t.float().sum() for scale in pred for t in scale) * 0.0
        return {"D_unused": zero}
