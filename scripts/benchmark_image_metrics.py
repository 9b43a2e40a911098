"""How fast are the paired image metrics (PSNR, SSIM, MSE), and a whole ``scripts/evaluate.py``?

    python scripts/benchmark_image_metrics.py [--num_images 64] [--sizes 240x180,256x256]
    python scripts/benchmark_image_metrics.py --evaluate 500 [--size 256] [--workdir DIR]

Default mode, per image size, on random structured image pairs (float64, the evaluator's
input): seconds per image, wall clock and process CPU (best of ``--repeats``) of

* ``old``: the previous implementation, one image per call: torchmetrics' SSIM map
  (reflect-padded 11x11 Gaussian conv) without its 5-pixel border, plus MSE and PSNR; it is
  timed on the first ``--old_images`` images only (its cost per image does not depend on N);
* ``new_per_image``: ``PairedMetrics.update`` called once per image;
* ``new_batched``: ``PairedMetrics.update`` called once on all ``--num_images`` images;
* ``skimage``: scikit-image's SSIM per image (the reference), with the same settings.

and the largest difference of the new SSIM / PSNR from the old and from scikit-image.

``--evaluate N`` writes N synthetic 256x256 (``--size``) PNG pairs (smooth random "real"
photos and noisy "fake" copies) and times ``scripts/evaluate.py --fake_dir --real_dir
--metrics fid,kid,paired --gpu_ids -1`` end to end as a child process (wall and CPU seconds,
start-up and image decoding included). One JSON line per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from evaluation.image_metrics import (SSIM_K1, SSIM_K2, SSIM_RADIUS, SSIM_SIGMA,  # noqa: E402
                                      PairedMetrics)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    """``"240x180,256x256"`` -> ``[(180, 240), (256, 256)]`` as (height, width)."""
    sizes = []
    for part in text.split(","):
        w, h = (int(v) for v in part.lower().split("x"))
        sizes.append((h, w))
    return sizes


def make_pairs(n: int, h: int, w: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(fake, real) float64 ``(n, 3, h, w)`` in [0, 1]: smooth noise and a noisy copy."""
    g = torch.Generator().manual_seed(seed)
    real = F.avg_pool2d(torch.rand(n, 3, h, w, generator=g, dtype=torch.float64), 5, 1, 2)
    fake = (real + 0.05 * torch.randn(real.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return fake, real


def old_paired(fake: torch.Tensor, real: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The previous implementation's arithmetic: (PSNR, SSIM) per image via torchmetrics."""
    from torchmetrics.functional.image import structural_similarity_index_measure
    m = (fake - real).pow(2).flatten(1).mean(1)
    _, full = structural_similarity_index_measure(
        fake, real, gaussian_kernel=True, sigma=SSIM_SIGMA, data_range=1.0, k1=SSIM_K1,
        k2=SSIM_K2, reduction="none", return_full_image=True)
    r = SSIM_RADIUS
    return 10.0 * torch.log10(1.0 / m), full[..., r:-r, r:-r].flatten(1).mean(1)


def skimage_ssim(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    from skimage.metrics import structural_similarity
    return torch.tensor([structural_similarity(
        f.numpy(), r.numpy(), gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False,
        data_range=1.0, channel_axis=0, K1=SSIM_K1, K2=SSIM_K2) for f, r in zip(fake, real)],
        dtype=torch.float64)


def best_time(fn: Callable[[], object], repeats: int) -> Tuple[float, float, object]:
    """(best wall s, best CPU s, last result) over ``repeats`` calls after one warm-up."""
    out = fn()
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def bench_metrics(args: argparse.Namespace) -> None:
    for h, w in parse_sizes(args.sizes):
        fake, real = make_pairs(args.num_images, h, w)
        k = min(args.old_images, args.num_images)

        def run_old() -> Tuple[torch.Tensor, torch.Tensor]:
            outs = [old_paired(fake[i:i + 1], real[i:i + 1]) for i in range(k)]
            return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

        def run_new(per_image: bool) -> Callable[[], Dict[str, List[float]]]:
            def go() -> Dict[str, List[float]]:
                m = PairedMetrics()
                if per_image:
                    for i in range(len(fake)):
                        m.update(fake[i:i + 1], real[i:i + 1])
                else:
                    m.update(fake, real)
                return m.per_image()
            return go

        runs = {"old": (run_old, k), "new_per_image": (run_new(True), len(fake)),
                "new_batched": (run_new(False), len(fake))}
        if not args.no_skimage:
            runs["skimage"] = (lambda: skimage_ssim(fake, real), len(fake))
        results = {}
        for name, (fn, count) in runs.items():
            wall, cpu, out = best_time(fn, args.repeats)
            results[name] = out
            print(json.dumps({"measure": "paired_metrics", "impl": name, "size": f"{w}x{h}",
                              "images": count, "threads": torch.get_num_threads(),
                              "wall_s_per_image": round(wall / count, 5),
                              "cpu_s_per_image": round(cpu / count, 5)}), flush=True)
        new = results["new_batched"]
        new_ssim = torch.tensor(new["ssim"], dtype=torch.float64)
        new_psnr = torch.tensor(new["psnr"], dtype=torch.float64)
        old_psnr, old_ssim = results["old"]
        diffs = {"ssim_vs_old": float((new_ssim[:k] - old_ssim).abs().max()),
                 "psnr_vs_old": float((new_psnr[:k] - old_psnr).abs().max()),
                 "batched_vs_per_image": max(
                     float((torch.tensor(results["new_per_image"][key], dtype=torch.float64) -
                            torch.tensor(new[key], dtype=torch.float64)).abs().max()) for key in ("ssim", "psnr"))}
        if "skimage" in results:
            diffs["ssim_vs_skimage"] = float((new_ssim - results["skimage"]).abs().max())
        print(json.dumps({"measure": "max_abs_difference", "size": f"{w}x{h}", **diffs}),
              flush=True)


def write_synthetic_set(root: str, n: int, size: int, seed: int = 0) -> Tuple[str, str]:
    """N PNG pairs ``fake/%05d.png`` and ``real/%05d.png`` under ``root``; returns the folders."""
    from PIL import Image
    fake_dir, real_dir = os.path.join(root, "fake"), os.path.join(root, "real")
    os.makedirs(fake_dir, exist_ok=True)
    os.makedirs(real_dir, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        # low-frequency colour fields upsampled to full size: photo-like smoothness
        coarse = torch.rand(1, 3, size // 16, size // 16, generator=g)
        real = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        fake = real + 0.08 * torch.randn(real.shape, generator=g)
        for folder, img in ((real_dir, real), (fake_dir, fake)):
            arr = (img[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(np.ascontiguousarray(arr)).save(os.path.join(folder, f"{i:05d}.png"))
    return fake_dir, real_dir


def bench_evaluate(args: argparse.Namespace) -> None:
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_eval_")
    fake_dir, real_dir = os.path.join(workdir, "fake"), os.path.join(workdir, "real")
    have = len(os.listdir(fake_dir)) if os.path.isdir(fake_dir) else 0
    if have != args.evaluate:  # reuse a set of the right size between runs
        t0 = time.perf_counter()
        write_synthetic_set(workdir, args.evaluate, args.size)
        print(json.dumps({"measure": "write_synthetic_set", "images": args.evaluate,
                          "size": args.size, "wall_s": round(time.perf_counter() - t0, 2),
                          "dir": workdir}), flush=True)
    out = os.path.join(workdir, "metrics.json")
    cmd = [sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), "--fake_dir", fake_dir,
           "--real_dir", real_dir, "--metrics", args.metrics, "--gpu_ids", "-1", "--no_page",
           "--out", out, *args.evaluate_args]
    if "kid" in args.metrics.split(",") and "--kid_subset_size" not in args.evaluate_args:
        # KID refuses sets below its 1000-image subsets unless the size is given explicitly
        cmd += ["--kid_subset_size", str(min(args.evaluate, 1000))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"evaluate.py failed with exit status {proc.returncode}: {' '.join(cmd)}")
    with open(out) as f:
        metrics = json.load(f).get("metrics", {})
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"measure": "evaluate_py", "images": args.evaluate, "size": args.size,
                      "metrics": args.metrics, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                      "command": " ".join(cmd),
                      "values": {k: metrics.get(k) for k in ("fid", "kid_mean", "psnr", "ssim")}}),
          flush=True)


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_images", type=int, default=64, help="images per size (batched run)")
    p.add_argument("--old_images", type=int, default=8,
                   help="images timed with the old implementation (slow; per-image cost)")
    p.add_argument("--sizes", default="240x180,256x256", help="WIDTHxHEIGHT list")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up; best kept")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no_skimage", action="store_true", help="do not time scikit-image")
    p.add_argument("--evaluate", type=int, default=0, metavar="N",
                   help="time scripts/evaluate.py end to end on N synthetic image pairs")
    p.add_argument("--size", type=int, default=256, help="with --evaluate: image side")
    p.add_argument("--metrics", default="fid,kid,paired", help="with --evaluate: --metrics")
    p.add_argument("--workdir", default=None,
                   help="with --evaluate: where the images go (kept; reused if the count fits)")
    p.add_argument("evaluate_args", nargs=argparse.REMAINDER,
                   help="with --evaluate: further evaluate.py options after --")
    args = p.parse_args(argv)
    if args.evaluate_args and args.evaluate_args[0] == "--":
        args.evaluate_args = args.evaluate_args[1:]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        bench_evaluate(args)
    else:
        bench_metrics(args)


if __name__ == "__main__":
    main()
