"""SPADE vs SIMS (semi-parametric synthesis) on the synthetic dataset, same data and budget.

    python scripts/compare_sims_spade.py --out compare_sims --crop_size 64 --synthetic_num 400 \
        --niter 2 --test_num 500 [--sims_long_niter 12] [--gpu_ids 0] [--stn_steps 300 | --no_stn] [--vgg]

Steps (each skipped when its output exists, so an interrupted run continues):

1. build the segment bank of the training split (``scripts/build_segment_bank.py``) and, unless
   ``--no_stn``, its two alignment networks (``scripts/train_sims_stn.py --stn paper`` and
   ``--stn shape``), and the ordering network (``scripts/train_sims_ordering.py``) unless
   ``--no_order_net``; the bank comes first because the paper's training canvases are stencilled
   through retrieved segments;
2. train ``spade`` (``--netG spade``), ``sims`` (``--model sims`` with the paper's components, the
   defaults) and ``sims_light`` (the earlier defaults: ``--netG sims_unet --sims_objective light
   --sims_canvas light --sims_stages 1``) with the same dataset, size, widths, batch size, epochs
   and seed (``--no_vgg_loss`` unless ``--vgg``: the VGG19 weights must come from torchvision's
   cache);
3. synthesize the test split (scenes never seen in training) with ``test.py``: ``sims`` with the
   paper's retrieval and ordering network, ``sims_light`` with ``--sims_retrieval shape
   --sims_order depth``; with ``--sims_long_niter N``, both SIMS variants also trained N epochs;
4. train the evaluation segmenter (``scripts/train_segmenter.py``) unless ``--segmenter_path``;
5. run the evaluation suite (``scripts/evaluate.py``: TF-FID / KID against the paired real
   test photos, mIoU / pixel accuracy of the segmenter on the synthesized images, PSNR / SSIM)
   on every run, on each SIMS variant's canvas alone (the pasted segments before the network,
   holes black) and, for mIoU only, on the real test photos (the segmenter's ceiling).

Prints a markdown table and writes ``<out>/compare_sims_spade.json``. FID over a few hundred
small images is biased upward: compare the rows with each other, not with published numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The two SIMS variants: train.py flags, test.py flags. "sims" is the paper's (the defaults).
VARIANTS = {
    "sims": ([], []),
    "sims_light": (["--netG", "sims_unet", "--sims_objective", "light", "--sims_canvas", "light",
                    "--sims_stages", "1"], ["--sims_retrieval", "shape", "--sims_order", "depth"]),
}
METRICS = ("fid", "kid_mean", "miou", "pixel_accuracy", "psnr", "ssim", "sec_per_image", "num_images")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for checkpoints, results and the report")
    p.add_argument("--gpu_ids", default="-1")
    p.add_argument("--crop_size", type=int, default=64)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--ndf", type=int, default=16)
    p.add_argument("--batchSize", type=int, default=4)
    p.add_argument("--niter", type=int, default=2, help="epochs of each model")
    p.add_argument("--synthetic_num", type=int, default=400, help="training scenes")
    p.add_argument("--test_num", type=int, default=100, help="test scenes synthesized and evaluated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vgg", action="store_true", help="train both with the VGG loss (needs its weights)")
    p.add_argument("--no_stn", action="store_true", help="SIMS places segments without alignment networks")
    p.add_argument("--stn_steps", type=int, default=300, help="training steps of each alignment network")
    p.add_argument("--no_order_net", action="store_true", help="no ordering network (depth orders the canvas)")
    p.add_argument("--order_steps", type=int, default=1000, help="training steps of the ordering network")
    p.add_argument("--order_size", type=int, default=32, help="the ordering network's input size")
    p.add_argument("--order_width", type=int, default=8, help="the ordering network's width")
    p.add_argument("--segmenter_path", default=None, help="a trained 'unet' segmenter; default: train one")
    p.add_argument("--segmenter_epochs", type=int, default=8)
    p.add_argument("--fid_weights", default=None, help="TF-FID Inception file (default: as scripts/evaluate.py)")
    p.add_argument("--sims_long_niter", type=int, default=0,
                   help="also train both SIMS variants for this many epochs (e.g. SPADE's training time) "
                        "and add their rows; 0 = skip")
    p.add_argument("--extra_spade", default="", help="more train.py flags for SPADE, quoted")
    p.add_argument("--extra_sims", default="", help="more train.py flags for SIMS, quoted")
    return p


def dataset_args(a: argparse.Namespace) -> List[str]:
    """The dataset every step uses: the synthetic scenes at the crop size, same seed."""
    return ["--dataset_mode", "synthetic", "--crop_size", str(a.crop_size), "--load_size", str(a.crop_size)]


def checkpoints(a: argparse.Namespace) -> str:
    return os.path.join(a.out, "checkpoints")


def train_model(a: argparse.Namespace, name: str, extra: List[str]) -> float:
    """Train ``name`` unless its latest checkpoint exists; returns the seconds training took
    (kept in ``<run>/train_seconds.txt``, so a continued comparison still reports them)."""
    folder = os.path.join(checkpoints(a), name)
    record = os.path.join(folder, "train_seconds.txt")
    if os.path.isfile(os.path.join(folder, "latest_net_G.pth")):
        return float(open(record).read()) if os.path.isfile(record) else 0.0
    import train
    args = dataset_args(a) + [
        "--gpu_ids", a.gpu_ids, "--checkpoints_dir", checkpoints(a), "--name", name,
        "--ngf", str(a.ngf), "--ndf", str(a.ndf), "--batchSize", str(a.batchSize), "--seed", str(a.seed),
        "--synthetic_num", str(a.synthetic_num), "--niter", str(a.niter),
        "--display_freq", str(max(1, a.synthetic_num // 2)), "--print_freq", str(max(1, a.synthetic_num // 4))]
    if not a.vgg:
        args.append("--no_vgg_loss")
    start = time.time()
    train.main(args + extra)
    seconds = time.time() - start
    with open(record, "w") as f:
        f.write(f"{seconds:.1f}\n")
    return seconds


def bank_dir(a: argparse.Namespace) -> str:
    """The segment bank of the training split, shared by every SIMS run (``--bank_dir``)."""
    return os.path.join(checkpoints(a), "segment_bank")


def build_bank(a: argparse.Namespace) -> str:
    """The bank, its alignment networks (unless --no_stn) and its ordering network (unless
    --no_order_net), each built once."""
    folder = bank_dir(a)
    data = dataset_args(a) + ["--synthetic_num", str(a.synthetic_num), "--gpu_ids", a.gpu_ids]
    if not os.path.isfile(os.path.join(folder, "index.json")):
        from scripts.build_segment_bank import main as build
        build(data + ["--bank_dir", folder])
    if not a.no_stn:
        from scripts.train_sims_stn import main as train_stn
        for kind, file in (("paper", "frame_stn.pth"), ("shape", "stn.pth")):
            if not os.path.isfile(os.path.join(folder, file)):
                train_stn(["--bank_dir", folder, "--stn", kind, "--steps", str(a.stn_steps), "--seed", str(a.seed)]
                          + (data if kind == "paper" else ["--gpu_ids", a.gpu_ids]))
    if not a.no_order_net and not os.path.isfile(os.path.join(folder, "order.pth")):
        from scripts.train_sims_ordering import main as train_order
        train_order(data + ["--bank_dir", folder, "--steps", str(a.order_steps), "--seed", str(a.seed),
                             "--order_size", str(a.order_size), "--order_width", str(a.order_width)])
    return folder


def synthesize(a: argparse.Namespace, name: str, extra: Sequence[str] = (), tag: str = "") -> str:
    """test.py on ``--test_num`` test scenes; ``extra`` flags, results under ``results<tag>/``."""
    import test as test_script
    results = os.path.join(a.out, "results" + tag)
    args = ["--gpu_ids", a.gpu_ids, "--checkpoints_dir", checkpoints(a), "--name", name,
            "--results_dir", results, "--load_from_opt_file", "--synthetic_num", str(a.test_num),
            "--how_many", str(a.test_num), "--batchSize", str(a.batchSize)]
    if name.startswith("sims"):
        args += ["--bank_dir", bank_dir(a)] + (["--no_stn"] if a.no_stn else [])
    test_script.main(args + list(extra))
    return os.path.join(results, name, "test_latest")


def segmenter(a: argparse.Namespace) -> str:
    if a.segmenter_path:
        return a.segmenter_path
    path = os.path.join(checkpoints(a), "seg", "segmenter.pth")
    if not os.path.isfile(path):
        from scripts.train_segmenter import parse_options, train as train_segmenter
        train_segmenter(parse_options(dataset_args(a) + [
            "--name", "seg", "--checkpoints_dir", checkpoints(a), "--gpu_ids", a.gpu_ids,
            "--synthetic_num", str(a.synthetic_num), "--niter", str(a.segmenter_epochs),
            "--seg_ngf", "16", "--seed", str(a.seed)]))
    return path


def evaluate(a: argparse.Namespace, seg_path: str, results_dir: Optional[str] = None,
             fake_dir: Optional[str] = None, real_dir: Optional[str] = None,
             label_dir: Optional[str] = None, metrics: Optional[str] = None) -> Dict[str, Any]:
    from scripts.evaluate import run
    metrics = metrics or ("fid,seg,paired,time" if results_dir else "fid,seg,paired")  # loose folders: no timing
    args = ["--metrics", metrics, "--gpu_ids", a.gpu_ids, "--num_workers", "0",
            "--segmenter", "unet", "--segmenter_path", seg_path]
    if a.fid_weights:
        args += ["--fid_weights", a.fid_weights]
    if results_dir:
        args = [results_dir] + args
    else:  # loose folders (the canvas): say where the metrics go and which label space
        args += ["--fake_dir", fake_dir, "--real_dir", real_dir, "--label_dir", label_dir,
                 "--dataset_mode", "synthetic", "--label_nc", "12",
                 "--out", os.path.join(os.path.dirname(fake_dir), os.path.basename(fake_dir) + "_metrics.json")]
    return run(args)["metrics"]


def format_table(rows: Dict[str, Dict[str, Any]]) -> str:
    def cell(key: str, v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}" if key in ("fid", "train_seconds") else f"{v:.4f}"
        return "–" if v is None else str(v)
    keys = list(METRICS) + ["train_seconds"]
    lines = ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(k, r.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
    a = build_parser().parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    build_bank(a)
    seconds = {"spade": train_model(a, "spade", ["--netG", "spade"] + a.extra_spade.split())}
    folders = {"spade": synthesize(a, "spade")}
    long_a = argparse.Namespace(**{**vars(a), "niter": a.sims_long_niter})
    for variant, (train_flags, test_flags) in VARIANTS.items():
        runs = [(variant, a)] + ([(f"{variant}_{a.sims_long_niter}ep", long_a)] if a.sims_long_niter > 0 else [])
        for name, budget in runs:
            flags = ["--model", "sims", "--bank_dir", bank_dir(a)] + train_flags + a.extra_sims.split()
            seconds[name] = train_model(budget, name, flags)
            folders[name] = synthesize(a, name, test_flags)
    seg_path = segmenter(a)
    rows: Dict[str, Dict[str, Any]] = {}
    for name, folder in folders.items():
        rows[name] = {k: v for k, v in evaluate(a, seg_path, results_dir=folder).items() if k in METRICS}
        rows[name]["train_seconds"] = round(seconds.get(name, 0.0), 1) or None
    for variant in VARIANTS:
        images = os.path.join(folders[variant], "images")
        canvas = evaluate(a, seg_path, fake_dir=os.path.join(images, "canvas"), real_dir=os.path.join(images, "real_image"),
                          label_dir=os.path.join(folders[variant], "labels"))
        rows[f"{variant} canvas (no network)"] = {k: v for k, v in canvas.items() if k in METRICS}
    images = os.path.join(folders["sims"], "images")
    # the segmenter on the real test photos: the mIoU a perfect synthesizer would reach
    real = evaluate(a, seg_path, fake_dir=os.path.join(images, "real_image"),
                    real_dir=os.path.join(images, "real_image"), label_dir=os.path.join(folders["sims"], "labels"),
                    metrics="seg")
    rows["real photos (mIoU ceiling)"] = {k: v for k, v in real.items() if k in METRICS}
    table = format_table(rows)
    print(table)
    with open(os.path.join(a.out, "compare_sims_spade.json"), "w") as f:
        json.dump({"settings": vars(a), "results": rows, "results_dirs": folders}, f, indent=1,
                  default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return rows


if __name__ == "__main__":
    from util.cli import run_reporting_errors
    run_reporting_errors(lambda: main(sys.argv[1:]))
