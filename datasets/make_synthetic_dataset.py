"""Write synthetic street scenes to disk in the ``custom`` layout.

    python datasets/make_synthetic_dataset.py --out DIR --num N [--height H --width W]
        [--seed S] [--phase train|test]

writes DIR/label/*.png (8-bit class ids), DIR/image/*.png, DIR/instance/*.png (16-bit ids)
and DIR/depth/*.png (16-bit, normalized inverse depth min(1, 1 m / depth) * 65535). The
files hold exactly what ``--dataset_mode synthetic`` draws for the same seed and phase, so
``--dataset_mode custom --dataroot DIR --label_nc 12`` reads the same samples back.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic_scenes import NUM_CLASSES, render_scene, split_index  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--num", type=int, default=100, help="number of scenes")
    p.add_argument("--height", type=int, default=256, help="image height in pixels")
    p.add_argument("--width", type=int, default=256, help="image width in pixels")
    p.add_argument("--seed", type=int, default=0, help="world seed (like --synthetic_seed)")
    p.add_argument("--phase", type=str, default="train",
                   help="train, or test/val for the held-out scenes")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)),
                   help="rendering threads")
    return p


def write_scene(out: str, name: str, index: int, seed: int, height: int, width: int) -> None:
    """Render one scene and save its four files under ``out``."""
    scene = render_scene(index, seed, height, width)
    with np.errstate(divide="ignore"):
        inv = np.minimum(1.0, 1.0 / np.maximum(scene["depth"], 1e-6))
    Image.fromarray(scene["label"]).save(os.path.join(out, "label", name + ".png"))
    Image.fromarray(scene["image"]).save(os.path.join(out, "image", name + ".png"))
    Image.fromarray(scene["instance"].astype(np.uint16)).save(os.path.join(out, "instance", name + ".png"))
    Image.fromarray(np.round(inv * 65535).astype(np.uint16)).save(os.path.join(out, "depth", name + ".png"))


def main(argv: Optional[List[str]] = None) -> str:
    """Write the dataset; returns the output folder."""
    args = build_parser().parse_args(argv)
    if args.num < 1 or args.height < 1 or args.width < 1:
        raise SystemExit("error: --num, --height and --width must be positive")
    for sub in ("label", "image", "instance", "depth"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    phase = args.phase

    def job(i: int) -> None:
        write_scene(args.out, f"synthetic_{phase}_{i:06d}", split_index(phase, i), args.seed,
                    args.height, args.width)

    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for _ in tqdm(pool.map(job, range(args.num)), total=args.num, desc="writing scenes",
                      unit="scene", dynamic_ncols=True, disable=None):
            pass
    print(f"{args.num} scenes in {args.out} (label/ image/ instance/ depth/); read them with "
          f"--dataset_mode custom --dataroot {args.out} --label_nc {NUM_CLASSES}", file=sys.stderr)
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
