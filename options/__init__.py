"""Command-line options with SPADE's names and defaults (see base/train/test options)."""
