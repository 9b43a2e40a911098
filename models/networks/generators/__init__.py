"""Generators (``--netG``). Each module registers itself in ``GENERATORS``; the package
``models.networks`` imports every module here explicitly."""
