"""Synthesize a whole test split into results/<name>/test_<epoch>/ with an HTML page.

    python test.py --name run --which_epoch latest [--how_many 50] [--dataroot ...]
The network options come from the run's checkpoints/<name>/opt.json when it has one (flags given
here win; --no_opt_file ignores the file); a bare checkpoint (no opt.json) needs its flags.
Works from label maps alone (no real images): the real_image column is then left out.
Also writes labels/<name>.png (raw label ids) and results.json (options, timing) for
scripts/evaluate.py.
The model's ``visuals`` names the columns (images/<column>/): UDGAN models also write
synthesized_depth/ (and real_depth/ when the dataset has depth maps); ``--depth_from dataset``
steers the image with the dataset's depth maps (input_depth/). SIMS models (``--model sims``)
also write canvas/ (the pasted segments the image was made from).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Dict, List, Optional, Set

import torch
from tqdm import tqdm

from data import create_dataset
from data.loader import create_dataloader
from models import MODELS
from options.test_options import TestOptions
from util import banner, checkpoint, distributed, performance
from util.cli import run_reporting_errors
from util.errors import OptionError
from util.image_io import save_label_ids, visuals_to_images
from util.results_page import ResultsPage


def unique_name(path: str, used: Set[str]) -> str:
    """Result file name for a label map: its stem, prefixed by parent folders on collision."""
    parts = os.path.normpath(path).split(os.sep)
    stem = os.path.splitext(parts[-1])[0]
    name, depth = stem, 2
    while name in used and depth <= len(parts):
        name = "_".join(parts[-depth:-1] + [stem])
        depth += 1
    while name in used:
        name += "_dup"
    used.add(name)
    return name


# Options scripts/evaluate.py needs to read a results folder (label space, resolution, model).
MANIFEST_OPTIONS = ("name", "model", "netG", "which_epoch", "phase", "dataset_mode", "dataroot",
                    "label_nc", "contain_dontcare_label", "no_instance", "preprocess_mode",
                    "load_size", "crop_size", "aspect_ratio", "use_vae", "num_samples", "seed",
                    "batchSize", "gpu_ids", "amp", "eval", "eval_ignore_id")


class SynthesisTimer:
    """Seconds per synthesized image, device-synchronized. The first batch (cuDNN autotune,
    lazy init) is left out when there are more; every sample of a label map counts."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.batches: List[tuple] = []  # (seconds, images)

    @contextlib.contextmanager
    def measure(self, images: int, first_sample: bool = True):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.batches.append((time.perf_counter() - start, images))

    def summary(self, amp: str) -> dict:
        timed = self.batches[1:] if len(self.batches) > 1 else self.batches
        seconds, images = sum(t for t, _ in timed), sum(n for _, n in timed)
        return {"sec_per_image": seconds / images if images else None, "images_timed": images,
                "warmup_batches_skipped": len(self.batches) - len(timed),
                "device": str(self.device), "amp": amp,
                "what": "model.synthesize per batch (one-hot, encoder, generator), synchronized"}


# torch.nn.init's fillers: layer constructors and init_weights draw through these.
_INIT_FUNCTIONS = ("uniform_", "normal_", "constant_", "zeros_", "ones_", "kaiming_uniform_",
                   "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_",
                   "trunc_normal_")


@contextlib.contextmanager
def _no_random_init():
    saved = {n: getattr(torch.nn.init, n) for n in _INIT_FUNCTIONS if hasattr(torch.nn.init, n)}
    try:
        for n in saved:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def build_and_load(opt, folder: str) -> torch.nn.Module:
    """The model with its checkpoint loaded.

    SPADE's model (``--model pix2pix``) is built without random initialization (0.75 of 1.1 s
    CPU for COCO's generator on a 2-core CPU), which loading would overwrite; only when the
    networks' state_dicts (loaded strictly) cover every parameter and buffer of the model,
    otherwise it is built again as usual. (Building on the meta device was slower: its first
    use costs ~1.2 s.)
    """
    cls = MODELS.get(opt.model)
    if cls is MODELS.get("pix2pix"):
        with _no_random_init():
            model = cls(opt)
        loaded = {id(t) for net in model.networks().values()
                  for t in net.state_dict(keep_vars=True).values()}
        if all(id(t) in loaded for t in list(model.parameters()) + list(model.buffers())):
            model.checkpoint_step = checkpoint.load_networks(model.networks(), folder,
                                                             opt.which_epoch, opt)
            return model
    model = cls(opt)
    model.checkpoint_step = checkpoint.load_networks(model.networks(), folder, opt.which_epoch, opt)
    return model


def test_banner(opt, folder: str, model: torch.nn.Module, dataset_size: int, limit: float,
                results_dir: str) -> str:
    """What test.py loaded, from where, and where the results go."""
    step = getattr(model, "checkpoint_step", None)
    which = (f"epoch {opt.which_epoch}" if str(opt.which_epoch).isdigit()
             else f"'{opt.which_epoch}'")
    rows = [("checkpoint", f"{folder}{os.sep} {which}"
                           + (f", iteration {step} (samples seen)" if step else "")),
            ("dataset", f"[{opt.dataset_mode}] {opt.phase} split, {dataset_size} label maps, "
                        f"synthesizing {int(limit)}"
                        + (f" x {opt.num_samples} samples" if opt.num_samples > 1 else ""))]
    rows += list(banner.network_rows(model.networks()))
    rows.append(("results", os.path.join(results_dir, "index.html")))
    source = banner.option_source_line(getattr(opt, "option_origin", {}))
    rows.append(("options", source[len("options: "):] if source else
                 "from the command line (no opt.json in the checkpoint folder)"))
    return banner.format_block("Test", rows)


def set_test_mode(model: torch.nn.Module, opt) -> None:
    """Eval mode for every network, except a generator whose paper's test.py runs it in train
    mode (pix2pix's U-Net: ``TEST_IN_TRAIN_MODE``) when ``--eval`` is not given."""
    model.eval()
    net = getattr(model, "netG", None)
    if net is not None and getattr(net, "TEST_IN_TRAIN_MODE", False) and not getattr(opt, "eval", False):
        if opt.batchSize > 1 and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()):
            # train-mode BatchNorm would mix the statistics of the batch's images
            raise OptionError(f"--batchSize {opt.batchSize}: without --eval, --netG {opt.netG} runs in "
                              "train mode and its BatchNorm would normalize over the whole batch "
                              "(pix2pix's test.py uses one image); use --batchSize 1 or --eval")
        net.train()


def synthesize(opt) -> str:
    ctx = distributed.setup(opt.gpu_ids)
    torch.manual_seed(opt.seed)
    dataset = create_dataset(opt)
    loader = create_dataloader(dataset, opt.batchSize, shuffle=False, drop_last=False,
                               num_workers=opt.nThreads, pin_memory=ctx.device.type == "cuda")
    folder = os.path.join(opt.checkpoints_dir, opt.name)
    model = build_and_load(opt, folder)
    # Seeded again after loading: prior samples (--use_vae) do not depend on how much random
    # initialization building the model drew (none, in build_and_load).
    torch.manual_seed(opt.seed)
    model.to(ctx.device)
    set_test_mode(model, opt)  # --eval
    performance.prepare_for_inference(model, opt)  # --channels_last, --compile
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opt.amp)
    results_dir = os.path.join(opt.results_dir, opt.name, f"{opt.phase}_{opt.which_epoch}")
    if opt.results_per_page < 1:
        raise OptionError(f"--results_per_page must be at least 1 (got {opt.results_per_page})")
    page = ResultsPage(results_dir, f"{opt.name}: {opt.phase} results, checkpoint {opt.which_epoch}",
                       rows_per_page=opt.results_per_page)
    palette = dataset.palette()
    if opt.label_nc > 0:  # label maps (not image-to-image): a colour legend of the classes
        page.set_legend(dataset.class_names(), palette)
    limit = min(len(dataset), opt.how_many)
    used: Set[str] = set()
    done = 0
    timing = SynthesisTimer(ctx.device)
    if ctx.is_main:
        banner.emit(test_banner(opt, folder, model, len(dataset), limit, results_dir))
    bar = tqdm(total=int(limit), desc="synthesizing", unit="image", dynamic_ncols=True,
               disable=not banner.progress_bars_enabled())
    with torch.inference_mode():
        for batch in loader:
            if done >= limit:
                break
            autocast = torch.autocast(ctx.device.type, dtype=amp) if amp else contextlib.nullcontext()
            samples: List[Dict[str, torch.Tensor]] = []
            with autocast:
                for k in range(opt.num_samples):
                    # first sample: style from the real image when there is one; others: prior
                    with timing.measure(batch["label"].size(0), first_sample=(k == 0)):
                        out = model.synthesize(batch, use_style_image=(k == 0))
                    samples.append({key: v.float().cpu() for key, v in out.items()})
            for i in range(samples[0]["image"].size(0)):
                if done >= limit:
                    break
                # the model decides the columns (SIMS: canvas/, UDGAN: depth/, ...)
                visuals = visuals_to_images(model.visuals(batch, samples, i), palette)
                name = unique_name(batch["path"][i], used)
                page.add(name, visuals)
                if opt.label_nc > 0:  # label ids for evaluation; an input image needs none
                    save_label_ids(batch["label"][i], os.path.join(results_dir, "labels", name + ".png"))
                done += 1
                bar.update(1)
    bar.close()
    page.save()
    page.write_manifest({"options": {k: getattr(opt, k) for k in MANIFEST_OPTIONS if hasattr(opt, k)},
                         "num_images": done, "timing": timing.summary(opt.amp),
                         "torch": torch.__version__})
    print(f"{done} results in {results_dir}/index.html", file=sys.stderr)
    distributed.cleanup()
    return results_dir


def main(argv: Optional[List[str]] = None) -> None:
    run_reporting_errors(lambda: synthesize(TestOptions().parse(argv)))


if __name__ == "__main__":
    performance.tune_host_allocator()  # large CPU blocks reused, not faulted in afresh each step
    main(sys.argv[1:])
