"""Ablation: SPADE vs UDGAN (depthspade) trained with the same budget on the synthetic dataset.

    python scripts/ablation_depth.py --out ablation --crop_size 64 --ngf 16 --niter 4 \
        --synthetic_num 800 [--depth_estimator_path est.pth] [--gpu_ids 0]

Steps: (1) train two depth estimators on the synthetic training split
(scripts/train_depth_estimator.py), one for the depth discriminator and, with another seed, one
that judges the results (unless given by path); (2) train ``spade`` and
``depthspade`` (with the depth discriminator) with the same options, epochs and seed;
(3) synthesize the synthetic test split (scenes never seen in training) with both and report,
against the ground-truth depth and photos:

* depth_l1: mean |judge(synthesized) - true inverse depth| (does the image show the
  right 3-D layout?) and depth_delta1: share of pixels within a factor 1.25;
* gen_depth_l1: the depth generator's own error (depthspade only);
* image_l1 against the real test image; psnr (mean of per-image values) against it and FID
  against the real test photos, computed by the evaluation suite's registered metrics
  (``evaluation.metrics``: the same code as scripts/evaluate.py, on images quantized to 8 bits
  exactly as saved PNGs), and seconds per image.

Prints a markdown table and writes ``<out>/ablation.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for checkpoints, results and the report")
    p.add_argument("--gpu_ids", default="-1")
    p.add_argument("--crop_size", type=int, default=64)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--ndf", type=int, default=16)
    p.add_argument("--ngf_depth", type=int, default=16)
    p.add_argument("--batchSize", type=int, default=4)
    p.add_argument("--niter", type=int, default=4, help="epochs of each model")
    p.add_argument("--synthetic_num", type=int, default=800, help="training scenes")
    p.add_argument("--test_num", type=int, default=100, help="test scenes evaluated")
    p.add_argument("--estimator_epochs", type=int, default=10)
    p.add_argument("--depth_estimator_path", default=None,
                   help="a trained 'unet' estimator; default: train one first")
    p.add_argument("--eval_estimator_path", default=None,
                   help="the estimator that judges depth; default: train one with another seed")
    p.add_argument("--fid_weights", default=None, help="TF-FID Inception file (default: as scripts/evaluate.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra", default="", help="more train.py flags for both runs, quoted")
    return p


def common_args(a: argparse.Namespace) -> List[str]:
    return ["--gpu_ids", a.gpu_ids, "--dataset_mode", "synthetic", "--crop_size", str(a.crop_size),
            "--load_size", str(a.crop_size), "--ngf", str(a.ngf), "--seed", str(a.seed),
            "--checkpoints_dir", os.path.join(a.out, "checkpoints")]


def train_estimator(a: argparse.Namespace, name: str, seed: int) -> str:
    from scripts.train_depth_estimator import main as train_depth_estimator
    path = os.path.join(a.out, "checkpoints", name, "depth_estimator.pth")
    if not os.path.isfile(path):
        args = common_args(a)
        args[args.index("--seed") + 1] = str(seed)
        train_depth_estimator(args + ["--name", name, "--synthetic_num", str(a.synthetic_num),
                                      "--niter", str(a.estimator_epochs),
                                      "--batchSize", str(a.batchSize)])
    return path


def train_model(a: argparse.Namespace, name: str, netG: str, estimator: str) -> None:
    import train
    args = common_args(a) + [
        "--name", name, "--netG", netG, "--ndf", str(a.ndf), "--batchSize", str(a.batchSize),
        "--synthetic_num", str(a.synthetic_num), "--niter", str(a.niter), "--no_vgg_loss",
        "--display_freq", str(10 * a.synthetic_num), "--print_freq", str(a.synthetic_num)]
    if netG == "depthspade":
        args += ["--ngf_depth", str(a.ngf_depth), "--depth_estimator_path", estimator]
    train.main(args + a.extra.split())


@torch.no_grad()
def evaluate(a: argparse.Namespace, name: str, estimator_path: str) -> Dict[str, float]:
    from data import create_dataset
    from data.loader import create_dataloader
    from models import MODELS
    from models.networks.depth_estimators import build_depth_estimator
    from evaluation.inception import load_inception, to_uint8
    from evaluation.metrics import FID, Paired
    from options.test_options import TestOptions
    from util import checkpoint, distributed

    opt = TestOptions().parse(common_args(a) + ["--name", name, "--load_from_opt_file",
                                                "--synthetic_num", str(a.test_num),
                                                "--batchSize", str(a.batchSize)])
    ctx = distributed.setup(opt.gpu_ids)
    model = MODELS.get(opt.model)(opt)
    checkpoint.load_networks(model.networks(), os.path.join(opt.checkpoints_dir, name),
                             opt.which_epoch, opt)
    model.to(ctx.device).eval()
    est_opt = argparse.Namespace(depth_estimator="unet", depth_estimator_path=estimator_path,
                                 i2d_max_depth=10.0)
    estimator = build_depth_estimator(est_opt).to(ctx.device)
    # PSNR and FID from the shared metric objects, so they equal scripts/evaluate.py's numbers
    fid, paired = FID(load_inception(a.fid_weights, ctx.device)), Paired()
    loader = create_dataloader(create_dataset(opt), opt.batchSize, shuffle=False, drop_last=False)
    sums = {"depth_l1": 0.0, "depth_delta1": 0.0, "gen_depth_l1": 0.0, "image_l1": 0.0,
            "real_depth_l1": 0.0, "real_depth_delta1": 0.0}
    pixels = valid_pixels = images = 0
    seconds = 0.0
    for batch in tqdm(loader, desc=f"evaluating {name}", dynamic_ncols=True):
        start = time.perf_counter()
        out = model.synthesize(batch)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        fake = out["image"].float()
        real = batch["image"].to(ctx.device)
        true = batch["depth"].to(ctx.device)
        images += fake.size(0)
        pixels += true.numel()
        valid = true > 1e-3
        valid_pixels += int(valid.sum())
        # The judge on the real photos is the floor: no synthesized image can score better.
        for prefix, photo in (("", fake), ("real_", real)):
            l1, within = depth_errors(estimator(photo).float(), true, valid)
            sums[prefix + "depth_l1"] += l1
            sums[prefix + "depth_delta1"] += within
        if "depth" in out:
            sums["gen_depth_l1"] += float((out["depth"].float() - true).abs().sum())
        sums["image_l1"] += float((fake - real).abs().mean(dim=(1, 2, 3)).sum())
        fake8, real8 = to_uint8(fake), to_uint8(real)
        fid.update(fake8, real8)
        paired.update(fake8, real8)
    distributed.cleanup()
    return {"depth_l1": sums["depth_l1"] / pixels,
            "depth_delta1": sums["depth_delta1"] / max(1, valid_pixels),
            "gen_depth_l1": sums["gen_depth_l1"] / pixels if "depth" in out else None,
            "image_l1": sums["image_l1"] / images,
            "fid": fid.compute()["fid"],
            "psnr": paired.compute()["psnr"],
            "sec_per_image": seconds / images, "images": images,
            "real_depth_l1": sums["real_depth_l1"] / pixels,
            "real_depth_delta1": sums["real_depth_delta1"] / max(1, valid_pixels)}


def depth_errors(est: torch.Tensor, true: torch.Tensor, valid: torch.Tensor):
    """Summed |est - true| over all pixels and the count of valid pixels within a factor 1.25."""
    ratio = torch.maximum(est[valid].clamp_min(1e-3) / true[valid], true[valid] / est[valid].clamp_min(1e-3))
    return float((est - true).abs().sum()), float((ratio < 1.25).sum())


def format_table(results: Dict[str, Dict[str, float]]) -> str:
    keys = ["depth_l1", "depth_delta1", "gen_depth_l1", "image_l1", "psnr", "fid", "sec_per_image"]
    cell = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["| netG | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for netG, r in results.items():
        lines.append(f"| {netG} | " + " | ".join(cell(r[k]) for k in keys) + " |")
    first = next(iter(results.values()))
    lines.append("| real photos (floor) | " + cell(first["real_depth_l1"]) + " | "
                 + cell(first["real_depth_delta1"]) + " |" + " – |" * (len(keys) - 2))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    a = build_parser().parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    estimator = a.depth_estimator_path or train_estimator(a, "depth_estimator", a.seed)
    # The judge is another estimator (other seed): depthspade is trained to satisfy the first
    # one through its depth discriminator, so judging with it would flatter depthspade.
    judge = a.eval_estimator_path or train_estimator(a, "depth_judge", a.seed + 1)
    results = {}
    for name, netG in (("ablation_spade", "spade"), ("ablation_depthspade", "depthspade")):
        if not os.path.isfile(os.path.join(a.out, "checkpoints", name, "latest_net_G.pth")):
            train_model(a, name, netG, estimator)
        results[netG] = evaluate(a, name, judge)
    print(format_table(results))
    with open(os.path.join(a.out, "ablation.json"), "w") as f:
        json.dump({"settings": vars(a), "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    from util.cli import run_reporting_errors
    run_reporting_errors(lambda: main(sys.argv[1:]))
