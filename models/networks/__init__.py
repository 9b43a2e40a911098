"""Networks: registries (``--netG`` / ``--netD`` / ``--netE``) and their factories.

Every network module is imported here once, which fills the registries. Nothing in this
package imports ``data`` or ``trainers``.
"""
from __future__ import annotations

import argparse
from typing import Optional

from models.networks.base_network import (DEPTH_GENERATORS, DISCRIMINATORS,  # noqa: F401
                                          ENCODERS, GENERATORS, BaseNetwork)
from models.networks.config import NETWORK_BASE_DEFAULTS, NetworkConfig  # noqa: F401
from models.networks.generators import spade  # noqa: F401  (registers netG "spade")
from models.networks.generators import depthspade  # noqa: F401  (netG "depthspade", netG_depth "unet")
from models.networks.generators import unet  # noqa: F401  (netG "unet": pix2pix)
from models.networks.generators import pix2pixhd  # noqa: F401  (netG "pix2pixhd")
from models.networks.generators import asapnet  # noqa: F401  (netG "asapnet")
from models.networks.generators import crn  # noqa: F401  (netG "crn": SIMS's cascaded refinement network)
from models.networks.generators import sims_unet  # noqa: F401  (netG "sims_unet": a light U-Net for SIMS)
from models.networks import discriminators  # noqa: F401  (registers netD "multiscale", "patch")
from models.networks import encoder  # noqa: F401  (registers netE "conv")
from models.networks import feature_encoder  # noqa: F401  (pix2pixHD's feature encoder "pix2pixhd")


def _build(cls: type, opt: argparse.Namespace) -> BaseNetwork:
    cls.check_options(opt)  # the whole namespace: combinations across components
    net = cls(cls.config(opt))  # the network sees only its own options
    net.init_weights(opt.init_type, opt.init_variance)
    return net


def define_G(opt: argparse.Namespace) -> BaseNetwork:
    """The generator named by ``opt.netG``, options checked, weights initialized."""
    return _build(GENERATORS.get(opt.netG), opt)


def define_D(opt: argparse.Namespace) -> BaseNetwork:
    """The discriminator named by ``opt.netD``, options checked, weights initialized."""
    return _build(DISCRIMINATORS.get(opt.netD), opt)


def define_G_depth(opt: argparse.Namespace) -> BaseNetwork:
    """The depth generator named by ``opt.netG_depth`` (UDGAN), weights initialized."""
    return _build(DEPTH_GENERATORS.get(opt.netG_depth), opt)


def define_E(opt: argparse.Namespace, name: Optional[str] = None) -> BaseNetwork:
    """The encoder ``name`` (default: the VAE's 'conv'), weights initialized."""
    return _build(ENCODERS.get(name or "conv"), opt)


__all__ = ["GENERATORS", "DISCRIMINATORS", "ENCODERS", "DEPTH_GENERATORS", "BaseNetwork",
           "NetworkConfig", "NETWORK_BASE_DEFAULTS",
           "define_G", "define_D", "define_E", "define_G_depth"]
