"""Networks: registries (``--netG`` / ``--netD`` / ``--netE``) and their factories.

Every network module is imported here once, which fills the registries. Nothing in this
package imports ``data`` or ``trainers``.
"""
from __future__ import annotations

import argparse

from models.networks.base_network import (DISCRIMINATORS, ENCODERS, GENERATORS,  # noqa: F401
                                          BaseNetwork)
from models.networks.generators import spade  # noqa: F401  (registers netG "spade")
from models.networks import discriminators  # noqa: F401  (registers netD "multiscale")
from models.networks import encoder  # noqa: F401  (registers netE "conv")


def _build(cls: type, opt: argparse.Namespace) -> BaseNetwork:
    cls.check_options(opt)
    net = cls(opt)
    net.init_weights(opt.init_type, opt.init_variance)
    return net


def define_G(opt: argparse.Namespace) -> BaseNetwork:
    """The generator named by ``opt.netG``, options checked, weights initialized."""
    return _build(GENERATORS.get(opt.netG), opt)


def define_D(opt: argparse.Namespace) -> BaseNetwork:
    """The discriminator named by ``opt.netD``, options checked, weights initialized."""
    return _build(DISCRIMINATORS.get(opt.netD), opt)


def define_E(opt: argparse.Namespace) -> BaseNetwork:
    """The VAE encoder (``opt.netE``, default 'conv'), weights initialized."""
    return _build(ENCODERS.get(getattr(opt, "netE", "conv")), opt)


__all__ = ["GENERATORS", "DISCRIMINATORS", "ENCODERS", "BaseNetwork",
           "define_G", "define_D", "define_E"]
