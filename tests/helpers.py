"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""
from __future__ import annotations

import argparse
import sys

# Every option the networks read, with tiny sizes: a network test builds its options from this
# without going through the parser (which would need the data registries too).
NETWORK_DEFAULTS = dict(
    name="test", gpu_ids=[], checkpoints_dir="./checkpoints", model="pix2pix",
    norm_G="spectralspadesyncbatch3x3", norm_D="spectralinstance", norm_E="spectralinstance",
    phase="train", isTrain=True, batchSize=1, preprocess_mode="fixed", load_size=32,
    crop_size=32, aspect_ratio=1.0, label_nc=4, contain_dontcare_label=False, output_nc=3,
    dataroot=None, dataset_mode="synthetic", serial_batches=True, no_flip=True, nThreads=0,
    max_dataset_size=sys.maxsize, netG="spade", ngf=4, init_type="xavier", init_variance=0.02,
    z_dim=16, no_instance=True, nef=16, use_vae=False, num_upsampling_layers="normal",
    semantic_nc=4, seed=0, ndf=4, netD="multiscale", num_D=2, n_layers_D=3, gan_mode="hinge",
    no_ganFeat_loss=False, no_vgg_loss=True, lambda_feat=10.0, lambda_vgg=10.0,
    lambda_kld=0.05, vgg_weights=None, netD_subarch="n_layer")


def network_opt(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**{**NETWORK_DEFAULTS, **overrides})


def stand_in_checkout(root, files):
    """A folder with a stand-in for each of ``files`` (relative paths): enough for the
    compare_official_* scripts' checkout checks. Returns ``root`` (a pathlib.Path)."""
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("# stand-in\n")
    return root
