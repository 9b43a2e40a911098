"""Fidelity of ``--netG unet`` to junyanz's official pix2pix: same checkpoint, same images.

    python scripts/compare_official_pix2pix.py --official /path/to/pytorch-CycleGAN-and-pix2pix \
        [--configs unet_256_batch,unet_128_instance] [--num_test 3] [--work DIR] \
        [--official_pythonpath DIR]

For each configuration, in a scratch folder (``--work``, default a new temporary one):

1. a tiny made-up aligned dataset (``train/``, ``test/`` of A|B JPEGs, each half a little larger
   than the network's size, so test.py's bicubic resize does something);
2. the official ``train.py`` runs one iteration (``--model pix2pix``, CPU, random init) and
   writes ``latest_net_G.pth`` (a bare state_dict: BatchNorm statistics after one step);
3. the official ``test.py --eval --num_test N`` writes ``images/<i>_{real_A,fake_B,real_B}.png``;
4. our ``test.py --dataset_mode aligned --eval`` loads that very file from the same checkpoint
   folder (strictly: a mismatch is an error, never a partial load) and writes
   ``images/{input_label,synthesized_image,real_image}/<i>.png``;
5. the PNGs are compared pixel by pixel: largest absolute difference in grey levels, pixels that
   differ at all and pixels that differ by more than 1.

A difference of 1 is expected in about half the pixels: the official ``tensor2im`` truncates
(``astype(uint8)`` of (x + 1) / 2 * 255) while ours rounds. So the script also runs our
generator in-process on the same inputs and converts its output the official way: the number of
values that still differ from the official ``fake_B`` PNGs is printed (0 when the networks agree
to float rounding). The script exits with status 1 when
any difference exceeds ``--tolerance`` (1). Configurations:

* ``unet_256_batch``: ``--netG unet_256 --norm batch --direction AtoB`` (official training
  preprocessing 286 -> 256), ours ``--num_downs 8 --unet_norm batch``;
* ``unet_128_instance``: ``--netG unet_128 --norm instance --direction BtoA`` (143 -> 128),
  ours ``--num_downs 7 --unet_norm instance --crop_size 128 --load_size 128``.

The official code runs on CPU (``--gpu_ids -1``) as it is; it needs torch, torchvision and
dominate (``--official_pythonpath`` for a folder of packages only it needs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import official_code as oc  # noqa: E402
from util.errors import OptionError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_FILES = ("train.py", "test.py", "models/pix2pix_model.py", "models/networks.py",
                  "data/aligned_dataset.py")
# name -> (official flags, our flags, network size, official training load size)
CONFIGS: Dict[str, Dict[str, object]] = {
    "unet_256_batch": {
        "official": ["--netG", "unet_256", "--norm", "batch", "--direction", "AtoB"],
        "ours": ["--num_downs", "8", "--unet_norm", "batch", "--direction", "AtoB"],
        "size": 256, "train_load": 286},
    "unet_128_instance": {
        "official": ["--netG", "unet_128", "--norm", "instance", "--direction", "BtoA"],
        "ours": ["--num_downs", "7", "--unet_norm", "instance", "--direction", "BtoA"],
        "size": 128, "train_load": 143},
}
# official test.py names -> ours (images/<name>/<stem>.png)
IMAGE_PAIRS = (("fake_B", "synthesized_image"), ("real_A", "input_label"), ("real_B", "real_image"))


def check_official(path: Optional[str]) -> str:
    """The absolute path of a pytorch-CycleGAN-and-pix2pix checkout, or an OptionError."""
    return oc.check_official(path, "pytorch-CycleGAN-and-pix2pix",
                             "github.com/junyanz/pytorch-CycleGAN-and-pix2pix", OFFICIAL_FILES)


def official_commit(root: str) -> str:
    """``git rev-parse HEAD`` of the checkout, or "unknown" (an archive without .git)."""
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def make_aligned_data(root: str, half: int, n_train: int = 1, n_test: int = 3, seed: int = 0) -> str:
    """Write ``root/{train,test}/<i>.jpg``: A|B images of ``half`` x ``half`` per side (smooth
    patterns plus noise, deterministic in ``seed``). Returns ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:half, 0:half] / half
    for phase, n in (("train", n_train), ("test", n_test)):
        os.makedirs(os.path.join(root, phase), exist_ok=True)
        for i in range(n):
            a = np.stack([np.sin(6 * xx + i), np.cos(5 * yy + 2 * i), xx * yy], -1)
            b = np.stack([xx, yy, np.sin(9 * xx * yy + i)], -1)
            ab = np.concatenate([a + 0.3 * rng.standard_normal(a.shape),
                                 b + 0.2 * rng.standard_normal(b.shape)], axis=1)
            ab = (ab - ab.min()) / (ab.max() - ab.min()) * 255
            Image.fromarray(ab.astype(np.uint8)).save(os.path.join(root, phase, f"{i}.jpg"), quality=95)
    return root


def official_commands(python: str, config: str, data: str, checkpoints: str, results: str,
                      num_test: int) -> List[List[str]]:
    """The official train.py (one iteration) and test.py --eval command lines."""
    spec = CONFIGS[config]
    size, load = str(spec["size"]), str(spec["train_load"])
    common = ["--dataroot", data, "--name", config, "--model", "pix2pix", "--gpu_ids", "-1",
              "--checkpoints_dir", checkpoints] + list(spec["official"])
    train = [python, "train.py", *common, "--load_size", load, "--crop_size", size,
             "--n_epochs", "1", "--n_epochs_decay", "0", "--max_dataset_size", "1",
             "--save_epoch_freq", "1", "--display_id", "0", "--no_html", "--num_threads", "0"]
    test = [python, "test.py", *common, "--load_size", size, "--crop_size", size,
            "--results_dir", results, "--eval", "--num_test", str(num_test)]
    return [train, test]


def our_command(python: str, config: str, data: str, checkpoints: str, results: str,
                num_test: int) -> List[str]:
    """Our test.py on the official checkpoint folder, with --eval."""
    spec = CONFIGS[config]
    size = str(spec["size"])
    return [python, "test.py", "--name", config, "--checkpoints_dir", checkpoints,
            "--dataroot", data, "--dataset_mode", "aligned", "--preset", "pix2pix",
            "--gpu_ids", "-1", "--nThreads", "0", "--load_size", size, "--crop_size", size,
            "--results_dir", results, "--eval", "--how_many", str(num_test)] + list(spec["ours"])


def compare_pngs(official_images: str, our_images: str) -> Dict[str, Dict[str, object]]:
    """Compare official ``<stem>_<kind>.png`` with our ``<our kind>/<stem>.png`` for every
    pair of ``IMAGE_PAIRS``: per our kind, official_code.compare_pngs's result (a missing
    image or one of another size counts as a difference of 255)."""
    out: Dict[str, Dict[str, object]] = {}
    for theirs, ours in IMAGE_PAIRS:
        suffix = f"_{theirs}.png"
        stems = sorted(n[:-len(suffix)] for n in os.listdir(official_images) if n.endswith(suffix))
        out[ours] = oc.compare_pngs((stem, os.path.join(official_images, stem + suffix),
                                     os.path.join(our_images, ours, stem + ".png")) for stem in stems)
    return out


def truncated_differences(config: str, data: str, checkpoints: str, official_images: str,
                          num_test: int) -> Dict[str, object]:
    """Our generator in this process, on the same checkpoint and test images as our test.py,
    its float output converted as the official ``tensor2im`` does (truncation): how many 8-bit
    values differ from the official ``fake_B`` PNGs (0 means the same numbers up to float
    rounding), out of how many."""
    import numpy as np
    import torch

    from data import create_dataset
    from models import MODELS
    from options.test_options import TestOptions
    from util import checkpoint

    argv = our_command(sys.executable, config, data, checkpoints, "unused", num_test)[2:]
    opt = TestOptions().parse(argv)
    dataset = create_dataset(opt)
    model = MODELS.get(opt.model)(opt)
    checkpoint.load_networks(model.networks(), os.path.join(checkpoints, config), "latest", opt)
    model.eval()
    result = oc.empty_comparison()
    for i in range(min(num_test, len(dataset))):
        sample = dataset[i]
        batch = {k: (v.unsqueeze(0) if torch.is_tensor(v) else [v]) for k, v in sample.items()}
        out = model.inference(batch)[0].float().numpy().transpose(1, 2, 0)
        mine = ((out + 1) / 2.0 * 255.0).astype(np.uint8)
        stem = os.path.splitext(os.path.basename(sample["path"]))[0]
        oc.add_difference(result, stem, oc.read_rgb(os.path.join(official_images, f"{stem}_fake_B.png")), mine)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    oc.add_official_options(p, "folder of a checkout of junyanz/pytorch-CycleGAN-and-pix2pix",
                            "PYTHONPATH for the official code (packages only it needs)", CONFIGS)
    p.add_argument("--official_commit", default=None,
                   help="commit of the official code, when --official is an archive without .git")
    p.add_argument("--num_test", type=int, default=3, help="test images per configuration")
    p.add_argument("--tolerance", type=int, default=1, help="largest accepted difference (grey levels)")
    return p


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    a = build_parser().parse_args(argv)
    official = check_official(a.official)
    configs = oc.parse_configs(a.configs, CONFIGS)
    if a.num_test < 1:
        raise OptionError(f"--num_test must be at least 1 (got {a.num_test})")
    work = oc.work_folder(a.work, "compare_official_pix2pix_")
    summary: Dict[str, object] = {"official": official,
                                  "official_commit": a.official_commit or official_commit(official),
                                  "work": work, "configs": {}}
    for config in configs:
        spec = CONFIGS[config]
        base = os.path.join(work, config)
        half = int(spec["size"]) * 300 // 256  # larger than the network: test.py resizes
        data = make_aligned_data(os.path.join(base, "data"), half, n_test=a.num_test)
        ckpt = os.path.join(base, "checkpoints")
        theirs, ours = os.path.join(base, "official_results"), os.path.join(base, "our_results")
        train, test = official_commands(a.python, config, data, ckpt, theirs, a.num_test)
        print(f"[{config}] official train.py (1 iteration) and test.py --eval", file=sys.stderr)
        oc.run(train, official, oc.child_env(a.official_pythonpath), os.path.join(base, "official_train.log"))
        oc.run(test, official, oc.child_env(a.official_pythonpath), os.path.join(base, "official_test.log"))
        print(f"[{config}] our test.py --eval on the official latest_net_G.pth", file=sys.stderr)
        oc.run(our_command(a.python, config, data, ckpt, ours, a.num_test), REPO, oc.child_env(),
               os.path.join(base, "our_test.log"))
        check = compare_pngs(os.path.join(theirs, config, "test_latest", "images"),
                             os.path.join(ours, config, "test_latest", "images"))
        exact = truncated_differences(config, data, ckpt, os.path.join(theirs, config, "test_latest", "images"),
                                      a.num_test)
        summary["configs"][config] = {"strict_load": "ok", "images": check, "truncated": exact}
    print(f"official commit: {summary['official_commit']}")
    print("| config | image | images | max abs diff | values differing | differing by > 1 |")
    print("|---|---|---|---|---|---|")
    worst = 0
    for config, result in summary["configs"].items():
        for kind, row in result["images"].items():
            worst = max(worst, row["max_abs_diff"])
            share = row["differing"] / row["values"] if row["values"] else 0.0
            print(f"| {config} | {kind} | {row['images']} | {row['max_abs_diff']} | "
                  f"{row['differing']} of {row['values']} ({share:.1%}) | {row['differing_by_more_than_1']} |"
                  + (f" missing: {', '.join(row['missing'])}" if row["missing"] else ""))
    for config, result in summary["configs"].items():
        t = result["truncated"]
        print(f"{config}: our float output with the official truncating conversion: {t['differing']} "
              f"of {t['values']} values differ from the official fake_B PNGs")
    summary["max_abs_diff"] = worst
    summary["within_tolerance"] = worst <= a.tolerance
    print(f"strict load: ok for {', '.join(summary['configs'])}; largest difference {worst} grey "
          f"level(s) (tolerance {a.tolerance})")
    with open(os.path.join(work, "compare.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    from util.cli import run_reporting_errors

    results: List[Dict[str, object]] = []
    run_reporting_errors(lambda: results.append(main(sys.argv[1:])))
    sys.exit(0 if results and results[0].get("within_tolerance") else 1)
