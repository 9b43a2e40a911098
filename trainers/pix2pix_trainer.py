"""One G step and one D step of SPADE-style training, with AMP, DDP and full resumable state."""
from __future__ import annotations

import argparse
import contextlib
import random
from typing import Any, Dict, Mapping

import numpy as np
import torch

from models.pix2pix_model import Pix2PixModel
from util import distributed
from util.errors import OptionError


def learning_rates(opt: argparse.Namespace, epoch: int) -> Dict[str, float]:
    """lr of G and D during ``epoch`` (1-based): constant for ``niter`` epochs, then linear
    decay reaching zero after ``niter + niter_decay`` (SPADE's schedule), split by TTUR."""
    lr = opt.lr
    done = epoch - 1  # epochs completed before this one
    if opt.niter_decay > 0 and done > opt.niter:
        lr = opt.lr * max(0.0, 1.0 - (done - opt.niter) / opt.niter_decay)
    if opt.no_TTUR:
        return {"G": lr, "D": lr}
    return {"G": lr / 2, "D": lr * 2}


def autocast_dtype(amp: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


class Pix2PixTrainer:
    """Owns the model on its device, the optimizers and the grad scalers."""

    def __init__(self, opt: argparse.Namespace, model: Pix2PixModel) -> None:
        self.opt = opt
        ctx = distributed.get_context()
        self.device = ctx.device
        model.to(self.device)
        # Networks are converted / wrapped one by one: the wrapper stays a plain module.
        # Frozen helpers (a depth estimator) are not in networks(): no DDP, no optimizer.
        for short in model.networks():
            net = distributed.convert_sync_batchnorm(getattr(model, "net" + short))
            setattr(model, "net" + short, distributed.wrap_ddp(net))
        self.model = model
        self.amp_dtype = autocast_dtype(opt.amp)
        if opt.no_TTUR:
            betas = (opt.beta1, opt.beta2)
        else:
            betas = (0.0, 0.9)
        lrs = learning_rates(opt, 1)
        # Discriminators (D, D_depth) form the D side; G, E, G_depth the G side.
        nets = model.networks()
        g_params = [p for k, net in nets.items() if not k.startswith("D") for p in net.parameters()]
        d_params = [p for k, net in nets.items() if k.startswith("D") for p in net.parameters()]
        self.optimizer_G = torch.optim.Adam(g_params, lr=lrs["G"], betas=betas)
        self.optimizer_D = torch.optim.Adam(d_params, lr=lrs["D"], betas=betas)
        use_scaler = opt.amp == "fp16"
        self.scaler_G = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.scaler_D = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.g_losses: Dict[str, torch.Tensor] = {}
        self.d_losses: Dict[str, torch.Tensor] = {}
        self.generated: Dict[str, torch.Tensor] = {}

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ steps
    def generator_backward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Forward + backward of the generator losses (no optimizer step)."""
        self.optimizer_G.zero_grad(set_to_none=True)
        # The discriminators' gradients from this pass are thrown away: skip their all-reduce.
        with contextlib.ExitStack() as no_sync:
            for short, net in self.model.networks().items():
                if short.startswith("D") and hasattr(net, "no_sync"):
                    no_sync.enter_context(net.no_sync())
            with self._autocast():
                losses, generated = self.model.generator_loss(batch)
                total = sum(v.float().mean() for v in losses.values())
            self.scaler_G.scale(total).backward()
        self.g_losses = {k: v.detach().float().mean() for k, v in losses.items()}
        self.generated = {k: v.detach() for k, v in generated.items()}
        return total.detach()

    def run_generator_one_step(self, batch: Mapping[str, Any]) -> None:
        try:
            self.generator_backward(batch)
        except ValueError as e:
            if "Expected more than 1 value per channel" not in str(e):
                raise
            raise OptionError(
                f"--norm_G {self.opt.norm_G}: a batch norm sees a single value per channel (a 1x1 "
                f"map and one sample per process). Use a larger --batchSize (now "
                f"{self.opt.batchSize}, global), a larger --crop_size, or an instance norm, e.g. "
                "--norm_G spectralspadeinstance3x3") from None
        self.scaler_G.step(self.optimizer_G)
        self.scaler_G.update()

    def discriminator_backward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        self.optimizer_D.zero_grad(set_to_none=True)
        with self._autocast():
            losses = self.model.discriminator_loss(batch)
            total = sum(v.float().mean() for v in losses.values())
        self.scaler_D.scale(total).backward()
        self.d_losses = {k: v.detach().float().mean() for k, v in losses.items()}
        return total.detach()

    def run_discriminator_one_step(self, batch: Mapping[str, Any]) -> None:
        self.discriminator_backward(batch)
        self.scaler_D.step(self.optimizer_D)
        self.scaler_D.update()

    def latest_losses(self) -> Dict[str, torch.Tensor]:
        return {**self.g_losses, **self.d_losses}

    # ------------------------------------------------------------------ schedule
    def set_epoch_lr(self, epoch: int) -> Dict[str, float]:
        lrs = learning_rates(self.opt, epoch)
        for group in self.optimizer_G.param_groups:
            group["lr"] = lrs["G"]
        for group in self.optimizer_D.param_groups:
            group["lr"] = lrs["D"]
        return lrs

    def current_lrs(self) -> Dict[str, float]:
        return {"G": self.optimizer_G.param_groups[0]["lr"], "D": self.optimizer_D.param_groups[0]["lr"]}

    # ------------------------------------------------------------------ state
    def networks(self) -> Dict[str, torch.nn.Module]:
        return {k: distributed.unwrap(v) for k, v in self.model.networks().items()}

    def state_dict(self) -> Dict[str, Any]:
        np_state = np.random.get_state()
        py_state = random.getstate()
        rng = {"torch": torch.get_rng_state(),
               "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                         "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                         "cached_gaussian": float(np_state[4])},
               "python": {"version": py_state[0], "state": list(py_state[1]),
                          "gauss_next": py_state[2]}}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"optimizer_G": self.optimizer_G.state_dict(),
                "optimizer_D": self.optimizer_D.state_dict(),
                "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
                "lr": self.current_lrs(), "rng": rng}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer_G.load_state_dict(state["optimizer_G"])
        self.optimizer_D.load_state_dict(state["optimizer_D"])
        if state.get("scaler_G"):
            self.scaler_G.load_state_dict(state["scaler_G"])
        if state.get("scaler_D"):
            self.scaler_D.load_state_dict(state["scaler_D"])
        for group in self.optimizer_G.param_groups:
            group["lr"] = state["lr"]["G"]
        for group in self.optimizer_D.param_groups:
            group["lr"] = state["lr"]["D"]
        rng = state.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            n = rng["numpy"]
            np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                                 n["has_gauss"], n["cached_gaussian"]))
            p = rng["python"]
            random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
