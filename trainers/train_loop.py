"""The training run of one process: data, model, loop, logging, checkpoints, stop signals."""
from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from data import create_dataset
from data.loader import create_dataloader
from models import MODELS
from options.base_options import save_options
from trainers import health
from trainers.pix2pix_trainer import Pix2PixTrainer
from util import banner, checkpoint, distributed
from util.cli import run_reporting_errors
from util.errors import TrainingDiverged
from util.iter_counter import IterationCounter
from util.run_lock import RunLock


class StopSignal:
    """SIGTERM (cluster preemption) / SIGINT (Ctrl-C) ask the loop to save and exit cleanly.

    The first signal only sets a flag that the loop checks after each iteration; a second
    SIGINT gets Python's default behaviour, so a stuck run can still be interrupted.
    """

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: Dict[int, object] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. embedded use): keep defaults
                pass

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _visuals(model, batch, generated: Dict[str, torch.Tensor], palette: np.ndarray,
             max_items: int = 4) -> List[Dict[str, np.ndarray]]:
    """The training page's grid: one row per sample (the first ``max_items`` of the batch), one
    column per visual as the model names them (``model.visuals``), in the model's order."""
    from util.image_io import visuals_to_images

    n = min(max_items, generated["image"].size(0))
    return [visuals_to_images(model.visuals(batch, [generated], i, training=True), palette)
            for i in range(n)]


class TrainingRun:
    """Everything one process needs for a run; ``run()`` trains until done or stopped.

    Start-up order matters for what a refused or interrupted run leaves behind: the main process
    first takes the folder's run lock (one writer per run) and finishes or discards an
    interrupted save; then everything is built and the resume checks run; only then are
    opt.txt / opt.json written. Until the lock is taken nothing in the folder is touched.
    """

    def __init__(self, opt: argparse.Namespace) -> None:
        self.opt = opt
        self.ctx = distributed.get_context()
        self.folder = os.path.join(opt.checkpoints_dir, opt.name)
        self.lock: Optional[RunLock] = RunLock(self.folder) if self.ctx.is_main else None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        opt = self.opt
        if self.lock is not None:
            self.lock.acquire()
            if self.lock.took_over:
                holder = self.lock.took_over
                self._log(f"{self.folder}: taking over the lock of PID {holder.get('pid')} on host "
                          f"{holder.get('host')}, which is no longer running")
            for line in checkpoint.recover(self.folder):
                self._log(f"{self.folder}: {line}")
        distributed.barrier()
        if opt.gpu_ids and self.ctx.device.type == "cpu":
            self._log(f"--gpu_ids {','.join(map(str, opt.gpu_ids))}: CUDA is not available, "
                      "training on the CPU (pass --gpu_ids -1 to silence this)")
        if self.ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick kernels
        seed_everything(opt.seed)
        self.dataset = create_dataset(opt)
        self.loader = create_dataloader(
            self.dataset, opt.batchSize, shuffle=not opt.serial_batches, drop_last=True,
            num_workers=opt.nThreads, seed=opt.seed, rank=self.ctx.rank,
            world_size=self.ctx.world_size, pin_memory=self.ctx.device.type == "cuda")
        self.model = MODELS.get(opt.model)(opt)
        self.trainer = Pix2PixTrainer(opt, self.model)
        self.counter = IterationCounter(opt.batchSize, opt.niter + opt.niter_decay)
        self.last_saved: Optional[str] = None
        self.warned_loss = False
        existing = checkpoint.list_labels(self.folder)
        if opt.continue_train:
            self._resume(opt.which_epoch, existing)
        elif existing:
            self._log(f"{self.folder} already holds checkpoints ({', '.join(existing)}); this run "
                      "starts from scratch and replaces them as it saves. Use --continue_train to "
                      "resume instead")
        if self.ctx.is_main:  # every check passed: now the run may describe itself on disk
            save_options(opt)
        distributed.barrier()
        self.visualizer = None
        opt.total_samples = len(self.dataset) * (opt.niter + opt.niter_decay)  # for the page's ETA
        if self.ctx.is_main:  # only the main process writes the log and the pages
            from util.visualizer import Visualizer
            self.visualizer = Visualizer(opt)
            if getattr(opt, "label_nc", 0) > 0:
                self.visualizer.set_legend(self.dataset.class_names(), self.dataset.palette())
        self._printed_at: Optional[int] = None    # total_steps of the last loss line
        self._displayed_at: Optional[int] = None  # total_steps of the last page images
        self.evaluator = None
        if getattr(opt, "eval_freq", 0) > 0:
            from trainers.periodic_eval import PeriodicEvaluator
            self.evaluator = PeriodicEvaluator(opt, self.ctx.device)
            if self.visualizer is not None and self.evaluator.history:
                self.visualizer.plot_metrics(self.evaluator.history)

    def close(self) -> None:
        """Release the run lock and close the logs (the end of the run, or a failed start)."""
        if getattr(self, "visualizer", None) is not None:
            self.visualizer.close()
        if self.lock is not None:
            self.lock.release()

    # ------------------------------------------------------------------ checkpoints
    def _resume(self, label: str, existing: List[str]) -> None:
        """Load ``label``'s networks and training state; a missing label is an error unless the
        folder has no checkpoint at all (a first run started with --continue_train, as SPADE
        users' job scripts do for requeues)."""
        if label not in existing:
            if not existing:
                self._log(f"--continue_train: no checkpoint in {self.folder} yet; starting from scratch")
                return
            raise checkpoint.CheckpointError(
                f"--continue_train --which_epoch {label}: {self.folder} has no '{label}' checkpoint; "
                f"it has: {', '.join(existing)}. Pass one of those to --which_epoch")
        state = checkpoint.load_for_resume(self.trainer.networks(), self.folder, label, self.opt)
        self.trainer.load_state_dict(state)
        self.counter.load_state_dict(state["counter"])
        self.last_saved = f"{self.folder}/{label}_net_G.pth (iteration {state['step']})"
        self._log(f"resumed from '{label}': epoch {self.counter.epoch}, "
                  f"{self.counter.epoch_iter} samples into it, {self.counter.total_steps} in all, "
                  f"lr G {self.trainer.current_lrs()['G']:.3g} D {self.trainer.current_lrs()['D']:.3g}")

    def save(self, label: str, also_as: Sequence[str] = ()) -> None:
        """Save under ``label`` (and ``also_as``, in the same atomic unit). Every process checks
        its state first: a network or optimizer holding NaN/inf is never written."""
        self._check_state()
        if self.ctx.is_main:
            state = self.trainer.state_dict()
            state["counter"] = self.counter.state_dict()
            checkpoint.save_checkpoint(self.folder, label, self.trainer.networks(), self.opt,
                                       step=self.counter.total_steps, train_state=state,
                                       also_as=also_as)
            self.last_saved = f"{self.folder}/{label}_net_G.pth (iteration {self.counter.total_steps})"
            if self.visualizer is not None:  # the page follows every save
                self.visualizer.refresh()
        distributed.barrier()

    def _evaluate(self, epoch: int) -> None:
        step = self.counter.total_steps
        metrics = self.evaluator.evaluate(self.model, epoch, step)
        if self.visualizer is not None:
            text = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            self._log(f"validation at epoch {epoch}, iteration {step}: {text}")
            with open(self.visualizer.log_name, "a", encoding="utf-8") as f:
                # not SPADE's "(epoch: .., iters: ..)" shape, so loss-log parsers skip it
                f.write(f"validation at epoch {epoch}, iteration {step}: {text}\n")
            self.visualizer.plot_metrics(self.evaluator.history)
            self.visualizer.log_scalars(step, metrics, "val/")

    # ------------------------------------------------------------------ log and page
    def _print_losses(self, epoch: int, losses: Dict[str, torch.Tensor], bar=None) -> None:
        """A loss line (every process takes part: the values are averaged across them)."""
        counter = self.counter
        values = distributed.mean_across_processes({k: float(v) for k, v in losses.items()})
        values = {k: values[k] for k in losses}  # keep SPADE's order
        self._check_state()
        self._warn_exploding(values)
        if bar is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
        self._printed_at = counter.total_steps
        if self.visualizer is not None:
            self.visualizer.print_current_errors(
                epoch, counter.epoch_iter, counter.total_steps, values, counter.time_per_iter)
            self.visualizer.log_scalars(counter.total_steps, self.trainer.current_lrs(), "lr/")

    def _display(self, epoch: int, batch, palette: np.ndarray) -> None:
        """This step's samples on the page (main process; when pages or --tf_log are on)."""
        if (self.visualizer is None or (self.opt.no_html and not self.opt.tf_log)
                or not self.trainer.generated):
            return
        self._displayed_at = self.counter.total_steps
        self.visualizer.display_current_results(
            _visuals(self.model, batch, self.trainer.generated, palette), epoch,
            self.counter.total_steps)

    def _catch_up(self, epoch: int, losses, batch, palette: np.ndarray) -> None:
        """At the end of a run: the last iteration's loss line and images, unless already there
        (so a run shorter than --print_freq / --display_freq still has both)."""
        if losses is not None and self._printed_at != self.counter.total_steps:
            self._print_losses(epoch, losses)
        if batch is not None and self._displayed_at != self.counter.total_steps:
            self._display(epoch, batch, palette)

    def _page_end(self, how: str, detail: str) -> None:
        """Write how the run ended on the page; a failure here never hides the run's own."""
        if self.visualizer is None:
            return
        try:
            {"finished": lambda: self.visualizer.finish(),
             "stopped": lambda: self.visualizer.stopped(detail),
             "diverged": lambda: self.visualizer.diverged(detail),
             "failed": lambda: self.visualizer.failed(detail)}[how]()
        except Exception as err:  # noqa: BLE001 - the page is a report, not the run
            self._log(f"warning: could not update the training page: {err}")

    def _log(self, message: str) -> None:
        if self.ctx.is_main:
            tqdm.write(message, file=sys.stderr)

    # ------------------------------------------------------------------ divergence
    def _diverged(self, what: str) -> TrainingDiverged:
        good = self.last_saved or "none saved yet"
        return TrainingDiverged(
            f"training diverged: {what} at epoch {self.counter.epoch}, iteration "
            f"{self.counter.total_steps} (samples). No checkpoint was written after it; the "
            f"last good checkpoint is {good}. Resume from it with --continue_train and try a "
            "lower --lr, --amp bf16 or none instead of fp16, or check the data.")

    def _check_finite(self, losses: Dict[str, torch.Tensor], stop: Optional[str]) -> bool:
        local_bad = ~torch.isfinite(torch.stack([v.float() for v in losses.values()])).all()
        nonfinite, stop_any = distributed.any_across_processes([local_bad, stop is not None])
        if nonfinite:
            bad = [k for k, v in losses.items() if not math.isfinite(float(v))]
            raise self._diverged(", ".join(f"{k} = {float(losses[k])}" for k in bad) if bad
                                 else "a loss on another process")
        return stop_any

    def _check_state(self) -> None:
        """Parameters, buffers (BatchNorm statistics, spectral-norm vectors) and optimizer
        moments must be finite: losses can stay finite while a running variance overflows."""
        bad = health.first_nonfinite_state(self.trainer.networks(), self.trainer.optimizers())
        if distributed.any_across_processes([bad is not None])[0]:
            raise self._diverged(bad or "a network's state on another process holds NaN/inf")

    def _warn_exploding(self, values: Dict[str, float]) -> None:
        limit = getattr(self.opt, "loss_warn_threshold", 0)
        big = {k: v for k, v in values.items() if limit > 0 and abs(v) > limit}
        if big and not self.warned_loss:
            self.warned_loss = True
            self._log("warning: losses are exploding (" + ", ".join(f"{k} = {v:.3g}" for k, v in big.items())
                      + f", above --loss_warn_threshold {limit:g}) at iteration "
                      f"{self.counter.total_steps}; training goes on, but consider a lower --lr")

    def run(self) -> None:
        opt, counter, trainer = self.opt, self.counter, self.trainer
        stopper = StopSignal()
        stopper.install()
        _LOOP_STARTED[0] = True
        palette = self.dataset.palette()
        first = True  # this process's first iteration: log and page at once
        epoch, losses, batch = counter.epoch, None, None
        try:
            while counter.epoch <= counter.total_epochs:
                epoch = counter.epoch
                lrs = trainer.set_epoch_lr(epoch)
                skip = counter.epoch_iter // opt.batchSize
                self.loader.sampler.set_epoch(epoch, skip=skip * self.loader.batch_size)
                if hasattr(self.dataset, "set_epoch"):  # augmentation and noise follow (seed, epoch, index)
                    self.dataset.set_epoch(epoch)
                bar = tqdm(self.loader, desc=f"epoch {epoch}/{counter.total_epochs}",
                           initial=skip, total=skip + len(self.loader),
                           disable=not (self.ctx.is_main and banner.progress_bars_enabled()),
                           dynamic_ncols=True, leave=True)
                for i, batches in enumerate(_groups(bar, opt.accum_iter), start=skip // opt.accum_iter):
                    if i % opt.D_steps_per_G == 0:
                        trainer.run_generator_one_step(batches)
                    trainer.run_discriminator_one_step(batches)
                    counter.record_one_iteration(opt.batchSize * len(batches))
                    batch = batches[-1]
                    losses = trainer.latest_losses()
                    stop = self._check_finite(losses, stopper.received)
                    if first or counter.needs_printing(opt.print_freq):
                        self._print_losses(epoch, losses, bar)
                    if first or counter.needs_displaying(opt.display_freq):
                        self._display(epoch, batch, palette)
                    first = False
                    if self.evaluator is not None and counter.needs_evaluating(opt.eval_freq):
                        self._evaluate(epoch)
                    if stop:
                        self._catch_up(epoch, losses, batch, palette)
                        self.save("latest")
                        self._page_end("stopped", stopper.received or "a signal on another process")
                        self._log(f"stopped by {stopper.received or 'a signal on another process'} "
                                  f"at epoch {epoch}, iteration {counter.total_steps}; saved a "
                                  f"resumable checkpoint in {self.folder}. Resume with "
                                  f"--continue_train --name {opt.name}")
                        return
                    if counter.needs_saving(opt.save_latest_freq):
                        self.save("latest")
                bar.close()
                if epoch == counter.total_epochs:  # the run's last iteration: its line and images
                    self._catch_up(epoch, losses, batch, palette)
                counter.record_epoch_end()
                if counter.epoch <= counter.total_epochs:
                    trainer.set_epoch_lr(counter.epoch)  # the saved state resumes with this lr
                if epoch % opt.save_epoch_freq == 0 or epoch == counter.total_epochs:
                    # one atomic unit: a kill leaves both labels or neither
                    self.save("latest", also_as=[str(epoch)])
                    if self.ctx.is_main and getattr(opt, "keep_last", 0) > 0:
                        removed = checkpoint.prune_epochs(self.folder, opt.keep_last)
                        if removed:
                            self._log(f"--keep_last {opt.keep_last}: removed {len(removed)} older epoch files")
                    self._log(f"saved the model at the end of epoch {epoch}, iteration "
                              f"{counter.total_steps} (lr G {lrs['G']:.3g}, D {lrs['D']:.3g})")
            self._page_end("finished", "")
            self._log(f"training finished: {counter.total_epochs} epochs, results in {self.folder}")
        except TrainingDiverged as err:
            what = str(err).split(". No checkpoint")[0]
            self._page_end("diverged", what[len("training diverged: "):]
                           if what.startswith("training diverged: ") else what)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, nothing saved
            self._page_end("stopped", "a second SIGINT (not saved)")
            raise
        except Exception as err:
            self._page_end("failed", f"{type(err).__name__}: {err}".splitlines()[0][:300])
            raise
        finally:
            stopper.uninstall()
            self.close()


def _groups(batches: Iterable, size: int) -> Iterator[List]:
    """Consecutive batches in lists of ``size`` (--accum_iter); the epoch's last list may be
    shorter, so every sample is still used once."""
    group: List = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def run_banner(run: "TrainingRun") -> str:
    """What the run built and where it writes, once every start-up check passed."""
    opt, counter = run.opt, run.counter
    per_epoch = len(run.loader)
    rows = [("dataset", f"[{opt.dataset_mode}] {len(run.dataset)} samples ({opt.phase} split), "
                        f"{per_epoch} iterations per epoch per process, batch {opt.batchSize}"),
            ("device", f"{run.ctx.device}, {run.ctx.world_size} "
                       f"process{'es' if run.ctx.world_size != 1 else ''} (world size)")]
    rows += list(banner.network_rows(run.model.networks()))
    rows.append(("checkpoints", run.folder + os.sep))
    page = os.path.join(run.folder, "web", "index.html")
    rows.append(("training page", "off (--no_html)" if opt.no_html else page))
    rows.append(("loss log", os.path.join(run.folder, "loss_log.txt")))
    if opt.continue_train and run.last_saved is not None:
        rows.append(("resumes", f"'{opt.which_epoch}' checkpoint: epoch {counter.epoch} of "
                                f"{counter.total_epochs}, {counter.epoch_iter} samples into it, "
                                f"iteration {counter.total_steps} (samples seen)"))
    else:
        rows.append(("starts", f"from scratch: epochs 1 to {counter.total_epochs}"))
    return banner.format_block("Run", rows)


def train_process(opt: argparse.Namespace) -> None:
    """Entry of each training process (called directly, by torchrun, or by the spawner); the main
    process prints the run's banner between building the run and training it."""
    def body() -> None:
        with distributed.process_group(opt.gpu_ids) as ctx:
            opt.is_main = ctx.is_main
            opt.world_size = ctx.world_size
            run = TrainingRun(opt)
            if ctx.is_main:
                try:
                    banner.emit(run_banner(run))
                except BaseException:
                    run.close()  # the run lock is released as when training ends
                    raise
            run.run()

    run_reporting_errors(body, interrupted=interrupted_during_start)


def interrupted_during_start(signal_name: str) -> int:
    """A signal the loop's own handler did not take: during start-up (nothing was trained, so
    SIGTERM, a preemption, is not a failure) or a second Ctrl-C while stopping."""
    if _LOOP_STARTED[0]:
        message = (f"stopped at once by a second {signal_name} without saving; resume from the last "
                   "checkpoint with --continue_train")
    else:
        message = (f"interrupted by {signal_name} during start-up: nothing was trained and no "
                   "checkpoint was written; run the same command again (add --continue_train to "
                   "resume)")
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)
    return 0 if signal_name == "SIGTERM" and not _LOOP_STARTED[0] else 130


# set once a run's loop owns the signals (for the message above)
_LOOP_STARTED = [False]
