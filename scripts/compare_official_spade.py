"""Side-by-side speed of this repository and NVlabs' official SPADE, as whole processes.

    python scripts/compare_official_spade.py --official /path/to/SPADE [--repeats 3] \
        [--configs coco_train,coco_synth,camvid_train,camvid_synth] [--official_pythonpath DIR] [--work DIR]

Each configuration runs ``train.py`` / ``test.py`` of both code bases with the same flags on the
same data, one child process per run, alternating official / ours, ``--repeats`` times each.
Every run starts from an empty checkpoint / results folder. It prints a Markdown table of the
median wall seconds (start-up, data, steps, saving: the whole process), the median peak RSS of
the child (``os.wait4``) and the ratios ours / official, and writes ``WORK/compare.json``.

Configurations (CPU, ``--gpu_ids -1``, VGG loss and VAE off, ``--nThreads 0``):

* ``coco_train``: COCO-Stuff sample (13 train pairs; 182 classes + dontcare + instance edges =
  184 input channels), 128x128, ngf 32, batch 1, 2 epochs = 26 iterations, one thread;
* ``coco_synth``: the 8 COCO-Stuff val label maps at 256x256, ngf 64 (the published setting),
  one thread, both from one checkpoint that the official train.py writes (1 iteration); the
  synthesized PNGs of both are compared pixel by pixel;
* ``camvid_synth``: fidelity, not speed: the CamVid-like set with its void stored as id 11 =
  ``--label_nc 11`` (``--contain_dontcare_label``: SPADE's dontcare channel), ngf 16, one
  checkpoint from the official train.py; both test.py outputs are compared pixel by pixel;
* ``camvid_train``: a CamVid-like set made from the Cityscapes sample (see ``make_camvid_like``):
  11 classes + dontcare = 12 input channels, 128x96, ngf/ndf 32, batch 4, 10 iterations, two
  threads.

The official code needs its own setup steps (its README): ``sync_batchnorm`` copied into
``models/networks/`` and the ``dill`` package; pass a folder holding packages only the official
code needs with ``--official_pythonpath``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import official_code as oc  # noqa: E402
from util.errors import OptionError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("coco_train", "coco_synth", "camvid_train", "camvid_synth")
OFFICIAL_FILES = ("train.py", "test.py", "models/pix2pix_model.py", "options/base_options.py",
                  "models/networks/normalization.py")
# Cityscapes label ids -> CamVid's 11 classes (sky, building, pole, road, sidewalk, tree,
# sign, fence, car, pedestrian, bicyclist); every other id is void (255 = dontcare).
CITYSCAPES_TO_CAMVID = {23: 0, 11: 1, 12: 1, 17: 2, 18: 2, 7: 3, 8: 4, 21: 5, 22: 5, 19: 6, 20: 6,
                        13: 7, 26: 8, 27: 8, 28: 8, 24: 9, 25: 10, 32: 10, 33: 10}
CAMVID_SIZE = (480, 360)  # CamVid's frames, width x height


def check_official(path: Optional[str]) -> str:
    """The absolute path of an official SPADE checkout, or an OptionError saying what is wrong."""
    root = oc.check_official(path, "SPADE", "github.com/NVlabs/SPADE", OFFICIAL_FILES)
    if not os.path.isdir(os.path.join(root, "models", "networks", "sync_batchnorm")):
        raise OptionError(f"--official {path}: models/networks/sync_batchnorm is missing; copy "
                          "it in as the official README says (Synchronized-BatchNorm-PyTorch)")
    return root


def check_samples(samples: str) -> None:
    need = ["coco_stuff/train_label", "coco_stuff/train_img", "coco_stuff/train_inst",
            "coco_stuff/val_label", "coco_stuff/val_img", "coco_stuff/val_inst",
            "cityscapes/gtFine/train", "cityscapes/leftImg8bit/train"]
    missing = [n for n in need if not os.path.isdir(os.path.join(samples, n))]
    if missing:
        raise OptionError(f"--samples {samples}: missing {', '.join(missing)}; give the shared "
                          "samples folder (COCO-Stuff and Cityscapes in their official layouts)")


def make_camvid_like(samples: str, out: str, void: int = 255) -> str:
    """CamVid-like pairs from the Cityscapes sample: photos center-cropped to 4:3 and resized to
    CamVid's 480x360 (bicubic; labels nearest), label ids mapped to CamVid's 11 classes, the
    rest void (``void``: 255, or 11 = the id after the last class, as CamVid's files store it).
    Returns the folder with label/ and image/ (same file names)."""
    import numpy as np
    from PIL import Image

    label_dir, image_dir = os.path.join(out, "label"), os.path.join(out, "image")
    os.makedirs(label_dir, exist_ok=True)
    os.makedirs(image_dir, exist_ok=True)
    lut = np.full(256, void, dtype=np.uint8)
    for k, v in CITYSCAPES_TO_CAMVID.items():
        lut[k] = v
    photos = os.path.join(samples, "cityscapes", "leftImg8bit", "train")
    count = 0
    for city in sorted(os.listdir(photos)):
        for name in sorted(os.listdir(os.path.join(photos, city))):
            if not name.endswith("_leftImg8bit.png"):
                continue
            stem = name[:-len("_leftImg8bit.png")]
            label_path = os.path.join(samples, "cityscapes", "gtFine", "train", city,
                                      stem + "_gtFine_labelIds.png")
            if not os.path.isfile(label_path):
                continue
            photo = Image.open(os.path.join(photos, city, name)).convert("RGB")
            label = Image.fromarray(lut[np.asarray(Image.open(label_path))])
            w, h = photo.size
            cw = min(w, h * 4 // 3)
            box = ((w - cw) // 2, 0, (w - cw) // 2 + cw, h)
            photo.crop(box).resize(CAMVID_SIZE, Image.BICUBIC).save(os.path.join(image_dir, stem + ".png"))
            label.crop(box).resize(CAMVID_SIZE, Image.NEAREST).save(os.path.join(label_dir, stem + ".png"))
            count += 1
    if count < 4:
        raise OptionError(f"--samples {samples}: found {count} Cityscapes photo/label pairs, "
                          "need at least 4 (one batch) for the CamVid-like set")
    return out


def camvid_data(camvid_root: str) -> List[str]:
    """The CamVid-like set's data flags: 11 classes + dontcare, 128x96."""
    return ["--dataset_mode", "custom", "--label_dir", os.path.join(camvid_root, "label"),
            "--image_dir", os.path.join(camvid_root, "image"), "--label_nc", "11",
            "--contain_dontcare_label", "--no_instance", "--preprocess_mode", "fixed",
            "--load_size", "128", "--crop_size", "128", "--aspect_ratio", "1.3333333333333333"]


def shared_checkpoint_args(config: str, coco_root: str, camvid_root: str) -> List[str]:
    """Flags of the official train.py run (1 iteration) that writes a synth config's checkpoint."""
    common = ["--gpu_ids", "-1", "--nThreads", "0", "--no_vgg_loss", "--niter", "1",
              "--niter_decay", "0", "--max_dataset_size", "1"]
    if config == "coco_synth":
        return common + ["--dataset_mode", "coco", "--dataroot", coco_root, "--load_size", "256",
                         "--crop_size", "256", "--ngf", "64"]
    return common + camvid_data(camvid_root) + ["--ngf", "16", "--ndf", "16", "--batchSize", "1"]


def config_args(config: str, coco_root: str, camvid_root: str) -> Dict[str, object]:
    """Flags (the same for both code bases), thread count and what the run does."""
    common = ["--gpu_ids", "-1", "--nThreads", "0"]
    if config == "coco_train":
        return {"script": "train.py", "threads": 1, "args": common + [
            "--dataset_mode", "coco", "--dataroot", coco_root, "--load_size", "128",
            "--crop_size", "128", "--ngf", "32", "--batchSize", "1", "--no_vgg_loss",
            "--niter", "2", "--niter_decay", "0"]}
    if config == "camvid_train":
        return {"script": "train.py", "threads": 2, "args": common + camvid_data(camvid_root) + [
            "--ngf", "32", "--ndf", "32", "--batchSize", "4", "--no_vgg_loss",
            "--niter", "5", "--niter_decay", "0"]}
    if config == "coco_synth":
        return {"script": "test.py", "threads": 1, "args": common + [
            "--dataset_mode", "coco", "--dataroot", coco_root, "--load_size", "256",
            "--crop_size", "256", "--ngf", "64", "--how_many", "8", "--which_epoch", "latest"]}
    if config == "camvid_synth":  # void stored as 11 = --label_nc: SPADE's dontcare channel
        return {"script": "test.py", "threads": 1, "args": common + camvid_data(camvid_root) + [
            "--ngf", "16", "--how_many", "8", "--which_epoch", "latest"]}
    raise OptionError(f"--configs: unknown configuration {config!r}; use {', '.join(CONFIGS)}")


def median_row(runs: List[Dict[str, float]]) -> Dict[str, float]:
    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs), "n": len(runs)}


def markdown_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """``results[config][side]`` with side 'official' / 'ours' -> median rows and ratios."""
    lines = ["| configuration | code base | runs | wall s | CPU s | peak RSS MiB | "
             "ours / official: wall, CPU, RSS |", "|---|---|---|---|---|---|---|"]
    for config, sides in results.items():
        off, ours = sides["official"], sides["ours"]
        lines.append(f"| {config} | official | {off['n']} | {off['wall_s']:.1f} | {off['cpu_s']:.1f} "
                     f"| {off['peak_rss_mib']:.0f} | |")
        lines.append(f"| | ours | {ours['n']} | {ours['wall_s']:.1f} | {ours['cpu_s']:.1f} | "
                     f"{ours['peak_rss_mib']:.0f} | **{ours['wall_s'] / off['wall_s']:.2f}**, "
                     f"{ours['cpu_s'] / off['cpu_s']:.2f}, "
                     f"{ours['peak_rss_mib'] / off['peak_rss_mib']:.2f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    oc.add_official_options(p, "folder of a checkout of NVlabs' SPADE (set up per its README)",
                            "PYTHONPATH for the official runs only (e.g. a folder where `dill` is installed)",
                            CONFIGS)
    p.add_argument("--samples", default=os.path.join(os.path.dirname(REPO), "shared", "samples"),
                   help="samples folder with coco_stuff/ and cityscapes/ (official layouts)")
    p.add_argument("--repeats", type=int, default=3, help="runs per code base and configuration")
    return p


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    a = build_parser().parse_args(argv)
    official = check_official(a.official)
    if a.repeats < 1:
        raise OptionError(f"--repeats must be at least 1 (got {a.repeats})")
    configs = oc.parse_configs(a.configs, CONFIGS)
    samples = os.path.abspath(a.samples)
    check_samples(samples)
    work = oc.work_folder(a.work, "compare_official_spade_")
    coco_root = os.path.join(samples, "coco_stuff")
    camvid_root = make_camvid_like(samples, os.path.join(work, "camvid_like")) \
        if "camvid_train" in configs else ""
    camvid_void11 = make_camvid_like(samples, os.path.join(work, "camvid_like_void11"), void=11) \
        if "camvid_synth" in configs else ""
    sides = {"official": (official, a.official_pythonpath), "ours": (REPO, None)}
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    checks: Dict[str, object] = {}
    for config in configs:
        data_root = camvid_void11 if config == "camvid_synth" else camvid_root
        spec = config_args(config, coco_root, data_root)
        base = os.path.join(work, config)
        ckpt_root = os.path.join(base, "checkpoints")
        synth = config.endswith("_synth")
        if synth:  # one checkpoint for both: the official layout, 1 iteration
            make = [a.python, "train.py", "--name", "synth", "--checkpoints_dir", ckpt_root,
                    *shared_checkpoint_args(config, coco_root, data_root)]
            if not os.path.isfile(os.path.join(ckpt_root, "synth", "latest_net_G.pth")):
                print(f"[{config}] writing the shared checkpoint with the official train.py", file=sys.stderr)
                os.makedirs(base, exist_ok=True)
                oc.run(make, official, oc.child_env(a.official_pythonpath, threads=2),
                       os.path.join(base, "make.log"))
        runs: Dict[str, List[Dict[str, float]]] = {"official": [], "ours": []}
        for r in range(a.repeats):
            for side, (cwd, pythonpath) in sides.items():
                out = os.path.join(base, f"{side}_{r}")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                cmd = [a.python, str(spec["script"])] + list(spec["args"])
                if synth:
                    cmd += ["--name", "synth", "--checkpoints_dir", ckpt_root,
                            "--results_dir", os.path.join(out, "results")]
                else:
                    cmd += ["--name", "run", "--checkpoints_dir", os.path.join(out, "checkpoints")]
                row = oc.run(cmd, cwd, oc.child_env(pythonpath, threads=int(spec["threads"])),
                             os.path.join(out, "log.txt"))
                runs[side].append(row)
                print(f"[{config}] {side} run {r + 1}/{a.repeats}: {row['wall_s']:.1f} s "
                      f"({row['cpu_s']:.1f} s CPU), "
                      f"{row['peak_rss_mib']:.0f} MiB", file=sys.stderr)
        results[config] = {side: median_row(v) for side, v in runs.items()}
        if synth:
            last = a.repeats - 1
            images = ["results", "synth", "test_latest", "images", "synthesized_image"]
            checks[config] = oc.compare_pngs(oc.png_pairs(os.path.join(base, f"official_{last}", *images),
                                                          os.path.join(base, f"ours_{last}", *images)))
    table = markdown_table(results)
    print(table)
    for config, check in checks.items():
        print(f"\n{config}, synthesized images against the official ones: {oc.comparison_line(check)}")
    summary = {"results": results, "image_checks": checks, "work": work}
    with open(os.path.join(work, "compare.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    from util.cli import run_reporting_errors
    run_reporting_errors(lambda: main(sys.argv[1:]))
