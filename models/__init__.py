"""Model wrappers (``--model``): each holds its networks and composes their losses.

``MODELS`` is an explicit registry; each wrapper module is imported here once.
"""
from util.registry import Registry

MODELS = Registry("model", "--model")

from models import pix2pix_model  # noqa: E402,F401  (registers "pix2pix")
from models import udgan_model  # noqa: E402,F401  (registers "udgan")
from models import sims_model  # noqa: E402,F401  (registers "sims" and netG "sims")
