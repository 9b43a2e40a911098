"""Test (batch synthesis) options."""
from __future__ import annotations

import argparse

from options.base_options import BaseOptions


class TestOptions(BaseOptions):
    isTrain = False

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        parser.add_argument("--results_dir", type=str, default="./results/",
                            help="results are saved here")
        parser.add_argument("--which_epoch", type=str, default="latest",
                            help="checkpoint to load: latest or an epoch number")
        parser.add_argument("--how_many", type=float, default=float("inf"),
                            help="synthesize at most this many label maps")
        parser.add_argument("--results_per_page", type=int, default=50,
                            help="label maps per results page (index.html, page_2.html, ...)")
        parser.add_argument("--num_samples", type=int, default=1,
                            help="images per label map (different z; needs --use_vae for variety)")
        parser.add_argument("--eval", action="store_true",
                            help="pix2pix's test-time switch, for --netG unet: without it the U-Net "
                                 "runs in train mode as pix2pix's test.py does (dropout on, BatchNorm "
                                 "with each batch's own statistics; reproducible with --seed), with "
                                 "it in eval mode (BatchNorm running statistics, no dropout). Other "
                                 "generators (SPADE, pix2pixHD, ASAPNet, ...) always run in eval "
                                 "mode, as SPADE's test.py does: --eval changes nothing for them")
        parser.set_defaults(preprocess_mode="scale_width_and_crop", crop_size=256, load_size=256,
                            display_winsize=256, serial_batches=True, no_flip=True, phase="test")
        return parser
