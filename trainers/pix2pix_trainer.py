"""One G step and one D step of SPADE-style training, with AMP, DDP and full resumable state."""
from __future__ import annotations

import argparse
import contextlib
import random
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np
import torch

from models.networks import checkpointing
from models.pix2pix_model import Pix2PixModel
from util import distributed, performance
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
        checkpointing.apply(model, opt)  # --gradient_checkpointing, on the plain modules
        # Networks are converted / wrapped one by one: the wrapper stays a plain module.
        # Frozen helpers (a depth estimator) are not in networks(): no DDP, no optimizer.
        for short in model.networks():
            net = distributed.convert_sync_batchnorm(getattr(model, "net" + short))
            net = distributed.wrap_ddp(performance.to_memory_format(net, opt))
            # compiled after DDP wrapping, so that compile sees DDP's bucket boundaries
            setattr(model, "net" + short, performance.maybe_compile(net, opt))
        self.model = model
        self.amp_dtype = autocast_dtype(opt.amp)
        betas = (opt.beta1, opt.beta2)  # their defaults follow --no_TTUR (options/train_options.py)
        lrs = learning_rates(opt, 1)
        # Discriminators (D, D_depth) form the D side; G, E, G_depth the G side.
        nets = model.networks()
        g_params = [p for k, net in nets.items() if not k.startswith("D") for p in net.parameters()]
        d_params = [p for k, net in nets.items() if k.startswith("D") for p in net.parameters()]
        # fused: one kernel per tensor instead of ~10 element-wise passes over every weight
        # (measured 5-13x faster per step on CPU); same update up to float rounding
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer_G = torch.optim.Adam(g_params, lr=lrs["G"], betas=betas, fused=fused)
        self.optimizer_D = torch.optim.Adam(d_params, lr=lrs["D"], betas=betas, fused=fused)
        use_scaler = opt.amp == "fp16"
        self.scaler_G = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.scaler_D = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.g_losses: Dict[str, torch.Tensor] = {}
        self.d_losses: Dict[str, torch.Tensor] = {}
        self.generated: Dict[str, torch.Tensor] = {}
        # pix2pixHD --niter_fix_global: netG weights the G step leaves alone this epoch
        self._fixed_G: List[torch.nn.Parameter] = []
        self._global_fixed = False
        self._fix_global(1)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ steps
    def _side(self, d_side: bool) -> Dict[str, torch.nn.Module]:
        return {k: v for k, v in self.model.networks().items() if k.startswith("D") == d_side}

    @contextlib.contextmanager
    def _frozen(self, nets: Mapping[str, torch.nn.Module]):
        """The G step needs gradients *through* the discriminators, not of their weights
        (those would be thrown away): skipping them saves their weight-gradient convs and,
        under DDP, their all-reduce."""
        params = [p for net in nets.values() for p in net.parameters() if p.requires_grad]
        with contextlib.ExitStack() as stack:
            for net in nets.values():
                if hasattr(net, "no_sync"):
                    stack.enter_context(net.no_sync())
            for p in params:
                p.requires_grad_(False)
            try:
                yield
            finally:
                for p in params:
                    p.requires_grad_(True)

    def _accumulate(self, batches: Sequence[Mapping[str, Any]], nets: Mapping[str, torch.nn.Module],
                    scaler: torch.amp.GradScaler, loss_fn) -> Dict[str, torch.Tensor]:
        """Backward of ``loss_fn`` over micro-batches, each weighted 1/n, so n micro-batches of B
        give the gradient of one step of n processes with batch B each (and of one batch of n*B
        for losses that are batch means). DDP all-reduces only on the last micro-batch."""
        n = len(batches)
        sums: Dict[str, torch.Tensor] = {}
        for i, batch in enumerate(batches):
            with contextlib.ExitStack() as stack:
                if i < n - 1:
                    for net in nets.values():
                        if hasattr(net, "no_sync"):
                            stack.enter_context(net.no_sync())
                with self._autocast():
                    losses = loss_fn(batch)
                    total = sum(v.float().mean() for v in losses.values())
                scaler.scale(total / n).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float().mean() / n
        return sums

    def generator_backward(self, batch: Union[Mapping[str, Any], List[Mapping[str, Any]]]) -> torch.Tensor:
        """Forward + backward of the generator losses (no optimizer step); a list of batches
        accumulates their gradients (``--accum_iter``)."""
        batches = [batch] if isinstance(batch, Mapping) else list(batch)
        # The other side's gradients were used by its last step: freed now, not at its next step,
        # so that they do not sit in memory beside this step's activations (G's are ~0.4 GB at
        # SPADE's COCO setting).
        self.optimizer_D.zero_grad(set_to_none=True)
        self.optimizer_G.zero_grad(set_to_none=True)
        generated: Dict[str, torch.Tensor] = {}

        def loss_fn(micro):
            losses, out = self.model.generator_loss(micro)
            generated.update(out)
            return losses
        with self._frozen(self._side(d_side=True)):
            self.g_losses = self._accumulate(batches, self._side(d_side=False), self.scaler_G, loss_fn)
        self.generated = {k: v.detach() for k, v in generated.items()}  # the last micro-batch's
        return sum(self.g_losses.values())

    def run_generator_one_step(self, batch: Union[Mapping[str, Any], List[Mapping[str, Any]]]) -> None:
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
        for p in self._fixed_G:  # no gradient: Adam skips the weight and keeps no state for it
            p.grad = None
        self.scaler_G.step(self.optimizer_G)
        self.scaler_G.update()

    def discriminator_backward(self, batch: Union[Mapping[str, Any], List[Mapping[str, Any]]]) -> torch.Tensor:
        batches = [batch] if isinstance(batch, Mapping) else list(batch)
        self.optimizer_G.zero_grad(set_to_none=True)  # see generator_backward
        self.optimizer_D.zero_grad(set_to_none=True)
        self.d_losses = self._accumulate(batches, self._side(d_side=True), self.scaler_D,
                                         self.model.discriminator_loss)
        return sum(self.d_losses.values())

    def run_discriminator_one_step(self, batch: Union[Mapping[str, Any], List[Mapping[str, Any]]]) -> None:
        self.discriminator_backward(batch)
        self.scaler_D.step(self.optimizer_D)
        self.scaler_D.update()

    def latest_losses(self) -> Dict[str, torch.Tensor]:
        return {**self.g_losses, **self.d_losses}

    # ------------------------------------------------------------------ schedule
    def set_epoch_lr(self, epoch: int) -> Dict[str, float]:
        self._fix_global(epoch)
        starts = getattr(self.model, "set_epoch", None)  # schedules that follow the epoch (SIMS's stages)
        if callable(starts):
            starts(epoch)
        lrs = learning_rates(self.opt, epoch)
        for group in self.optimizer_G.param_groups:
            group["lr"] = lrs["G"]
        for group in self.optimizer_D.param_groups:
            group["lr"] = lrs["D"]
        return lrs

    def _fix_global(self, epoch: int) -> None:
        """pix2pixHD's ``--niter_fix_global N``: during epochs 1..N only the outermost local
        enhancer of netG learns (its other weights get no update); from epoch N + 1 every weight
        does, and the G-side Adam state starts afresh, as the official code's new optimizer."""
        n = getattr(self.opt, "niter_fix_global", 0)
        fixed = n > 0 and epoch <= n
        if self._global_fixed and not fixed:
            self.optimizer_G.state.clear()
        self._global_fixed = fixed
        self._fixed_G = []
        if fixed:
            net = distributed.unwrap(self.model.netG)
            trained = {id(p) for p in net.enhancer_parameters()}
            self._fixed_G = [p for p in net.parameters() if id(p) not in trained]

    def current_lrs(self) -> Dict[str, float]:
        return {"G": self.optimizer_G.param_groups[0]["lr"], "D": self.optimizer_D.param_groups[0]["lr"]}

    # ------------------------------------------------------------------ state
    def networks(self) -> Dict[str, torch.nn.Module]:
        return {k: distributed.unwrap(v) for k, v in self.model.networks().items()}

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        return {"G": self.optimizer_G, "D": self.optimizer_D}

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
                "lr": self.current_lrs(), "rng": rng, "global_fixed": self._global_fixed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer_G.load_state_dict(state["optimizer_G"])
        self.optimizer_D.load_state_dict(state["optimizer_D"])
        self._global_fixed = bool(state.get("global_fixed", False))
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
