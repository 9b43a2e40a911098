"""Speed table of the generators: parameters, FLOPs, inference s/image, train s/iteration.

    python scripts/benchmark_generators.py --gpu_ids -1 --netGs spade,pix2pixhd,unet,asapnet \
        --sizes 256x256,256x512,512x1024 [--train_sizes 256x256] [--out speed.json]

Runs scripts/benchmark.py once per (generator, size) in a fresh process (so peak memory is its
own) with each generator's preset defaults (--preset), batch 1, the synthetic dataset with
``--label_nc`` classes (35 = Cityscapes' label ids by default), and prints a markdown table.
Training is timed only for ``--train_sizes`` (a G+D step of a full-width model at 512x1024
takes minutes on a CPU); the other rows show inference only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    """'256x512,512x1024' -> [(h, w), ...] (height x width, as papers write them)."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        h, _, w = part.partition("x")
        sizes.append((int(h), int(w or h)))
    return sizes


def standalone_generators() -> List[str]:
    """The registered generators that train without a file from another step (the default set)."""
    from models.networks import GENERATORS
    return [n for n in GENERATORS if GENERATORS.get(n).smoke_options is not None]


def preset_flags(netG: str) -> List[str]:
    """``--preset P`` for the paper recipe the generator's class declares (none if it has none)."""
    from models.networks import GENERATORS
    preset = GENERATORS.get(netG).preset
    return ["--preset", preset] if preset else []


def run_one(a: argparse.Namespace, netG: str, h: int, w: int, train: bool) -> Dict[str, float]:
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), "--gpu_ids", a.gpu_ids,
           *preset_flags(netG), "--netG", netG, "--crop_size", str(w), "--load_size", str(w), "--aspect_ratio", str(w / h),
           "--label_nc", str(a.label_nc), "--batchSize", "1", "--synthetic_num", "1",
           "--bench_iters", str(a.bench_iters), "--bench_warmup", "1", "--no_vgg_loss",
           "--preprocess_mode", "fixed", "--amp", a.amp, "--name", f"bench_{netG}",
           "--checkpoints_dir", a.checkpoints_dir]
    if not train:
        cmd += ["--bench_skip_train"]
    result = subprocess.run(cmd + a.extra.split(), cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {r["metric"]: r["value"] for r in rows}


def format_table(results: List[Dict]) -> str:
    lines = ["| netG | size (HxW) | params (M) | GFLOPs / image | inference s/image | train s/iter (G+D) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        m = r["metrics"]
        if "error" in m:
            lines.append(f"| {r['netG']} | {r['size']} | error: {m['error']} | | | |")
            continue
        train = f"{m['train_iter']:.3f}" if "train_iter" in m else "–"
        lines.append(f"| {r['netG']} | {r['size']} | {m['G_parameters'] / 1e6:.2f} | "
                     f"{m['G_flops_per_image'] / 1e9:.1f} | {m['inference']:.3f} | {train} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu_ids", default="-1")
    p.add_argument("--netGs", default=None,
                   help="comma list (default: every registered generator that trains standalone)")
    p.add_argument("--sizes", default="256x256,256x512,512x1024")
    p.add_argument("--train_sizes", default="256x256", help="sizes whose training step is timed too")
    p.add_argument("--label_nc", type=int, default=35)
    p.add_argument("--bench_iters", type=int, default=2)
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--checkpoints_dir", default=os.path.join(ROOT, "checkpoints"))
    p.add_argument("--extra", default="", help="more benchmark.py flags for every run, quoted")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    train_sizes = set(parse_sizes(a.train_sizes))
    results = []
    for h, w in parse_sizes(a.sizes):
        for netG in filter(None, (a.netGs or ",".join(standalone_generators())).split(",")):
            metrics = run_one(a, netG, h, w, (h, w) in train_sizes)
            results.append({"netG": netG, "size": f"{h}x{w}", "metrics": metrics})
            print(json.dumps(results[-1]), flush=True)
    print(format_table(results))
    if a.out:
        from util.image_io import atomic_write_text
        atomic_write_text(a.out, json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
