"""Training: optimizers, lr schedule, AMP, DDP wrapping, checkpoints, signals, NaN guard."""
