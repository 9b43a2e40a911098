"""Fidelity of ``--netG asapnet`` against the authors' ASAPNet code (github.com/tamarott/ASAPNet).

    python scripts/compare_official_asapnet.py --official /path/to/ASAPNet \
        [--official_pythonpath DIR] [--configs cs256,cs512] [--how_many 2] [--work DIR]

For each configuration it

1. copies the official checkout into ``WORK/official`` and patches the copy only so that it runs
   on the CPU (``patch_official``: a stand-in for the ``sync_batchnorm`` package its README has
   you download, and test.py's ``torch.cuda`` timing calls made no-ops);
2. builds the official generator with the configuration's flags, gives it random weights
   (seeded, scaled so that the images use the whole grey range; see ``MAKER``) and saves the
   bare state_dict as ``latest_net_G.pth``, exactly as the official train.py would;
3. runs the official ``test.py`` on the Cityscapes sample (its own ``dataset_mode cityscapes``,
   which reads ``train_labels/`` + ``train_images/`` folders: symlinks to the official layout),
   then our ``test.py`` with the same flags on the same files (official layout), from the same
   checkpoint (``--which_epoch latest``: our strict loader takes the bare state_dict);
4. prints the key-name / shape agreement of the two generators and, over the synthesized PNGs,
   the largest difference in grey levels and the number of differing values.

Configurations (label_nc 35, instance edges into the low-res stream, ``--lr_width 16
--lr_max_width 32 --lr_depth 2``, the default per-pixel MLP ``--hr_width 64 --hr_depth 5``):
``cs256`` 256x512 (16-px cells, no pre-downsampling), ``cs512`` 512x1024 (32-px cells: the input
of the low-res stream is first bilinearly downsampled by 2), ``cs256_reflect`` as cs256 with
``--reflection_pad``. ``--write_fixtures DIR`` also writes the official key/shape tables used by
tests/test_networks_asapnet_official.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import official_code as oc  # noqa: E402
from util.errors import OptionError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_FILES = ("test.py", "models/networks/generator.py", "models/networks/architecture.py",
                  "models/pix2pix_model.py", "data/cityscapes_dataset.py")
SMALL = ["--lr_width", "16", "--lr_max_width", "32", "--lr_depth", "2"]
CONFIGS: Dict[str, List[str]] = {
    "cs256": ["--load_size", "512", "--crop_size", "512"] + SMALL,
    "cs512": ["--load_size", "1024", "--crop_size", "1024"] + SMALL,
    "cs256_reflect": ["--load_size", "512", "--crop_size", "512", "--reflection_pad"] + SMALL,
}

# Run inside the patched official copy: build its generator from its own option parser, give it
# random weights and save them the way its util.save_network does (a bare state_dict).
MAKER = r'''
import json, math, sys
import torch
args, out, table, seed = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.argv = ["test.py"] + args
from options.test_options import TestOptions
import models.networks as networks
opt = TestOptions().parse()
torch.manual_seed(seed)
net = networks.define_G(opt)
last = net.lowres_stream.model[-1]
with torch.no_grad():
    for module in net.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Conv2d):
            fan_in = w[0].numel()
            # 0.3 / sqrt(fan_in) on the parameter head: predicted MLP weights of std ~0.2,
            # so that the per-pixel MLPs neither vanish nor saturate
            w.normal_(0.0, (0.3 if module is last else 1.0) / math.sqrt(fan_in))
            if module.bias is not None:
                module.bias.normal_(0.0, 0.1)
        elif isinstance(module, torch.nn.InstanceNorm2d) and w is not None:
            w.normal_(1.0, 0.1)
            module.bias.normal_(0.0, 0.1)
state = net.cpu().state_dict()
torch.save(state, out)
with open(table, "w") as f:
    json.dump({k: list(v.shape) for k, v in state.items()}, f, indent=0)
'''

STUB_SYNC_BN = '''"""Stand-in for the Synchronized-BatchNorm-PyTorch package (CPU runs never synchronize)."""
from torch.nn import BatchNorm2d as SynchronizedBatchNorm2d  # noqa: F401
from torch.nn import DataParallel as DataParallelWithCallback  # noqa: F401
'''
# test.py lines that need CUDA, and what replaces them on the CPU (timing / memory prints only)
TEST_PY_PATCHES = {
    "torch.cuda.reset_max_memory_allocated()": "pass",
    "torch.cuda.synchronize(device='cuda')": "pass",
    "print(torch.cuda.max_memory_allocated(device=None))": "pass",
    "time_total/(i)": "time_total/max(i, 1)",
}


def check_official(path: Optional[str]) -> str:
    """The absolute path of an official ASAPNet checkout, or an OptionError saying what is wrong."""
    root = oc.check_official(path, "ASAPNet", "github.com/tamarott/ASAPNet", OFFICIAL_FILES)
    with open(os.path.join(root, "models", "networks", "generator.py")) as f:
        if "ASAPNetsGenerator" not in f.read():
            raise OptionError(f"--official {path}: models/networks/generator.py has no "
                              "ASAPNetsGenerator; give a checkout of tamarott/ASAPNet")
    return root


def patch_official(source: str, target: str) -> str:
    """Copy the checkout to ``target`` and make the copy run on the CPU (nothing else changes)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".git"))
    sync = os.path.join(target, "models", "networks", "sync_batchnorm")
    if not os.path.isdir(sync):
        os.makedirs(sync)
        with open(os.path.join(sync, "__init__.py"), "w") as f:
            f.write(STUB_SYNC_BN)
    test_py = os.path.join(target, "test.py")
    with open(test_py) as f:
        text = f.read()
    for old, new in TEST_PY_PATCHES.items():
        text = text.replace(old, new)
    with open(test_py, "w") as f:
        f.write(text)
    return target


def official_layout(samples: str, out: str) -> str:
    """The folders the official ``dataset_mode cityscapes`` reads (``train_labels`` with
    ``*_labelIds.png`` / ``*_instanceIds.png``, ``train_images``), as symlinks into the
    official Cityscapes layout of ``samples``."""
    labels = os.path.join(samples, "cityscapes", "gtFine", "train")
    images = os.path.join(samples, "cityscapes", "leftImg8bit", "train")
    for d in (labels, images):
        if not os.path.isdir(d):
            raise OptionError(f"--samples {samples}: {d} is missing; give the shared samples folder "
                              "(Cityscapes in its official layout)")
    os.makedirs(out, exist_ok=True)
    for name, target in (("train_labels", labels), ("train_images", images)):
        link = os.path.join(out, name)
        if not os.path.islink(link):
            os.symlink(target, link)
    return out


def frame_id(file_name: str) -> str:
    """``city_seq_frame`` of a Cityscapes file name: the official test.py names its PNGs after
    the photo (``*_leftImg8bit.png``), ours after the label map (``*_gtFine_labelIds.png``)."""
    return "_".join(os.path.basename(file_name).split("_")[:3])


def compare_images(official_dir: str, our_dir: str) -> Dict[str, object]:
    """The PNGs of the two folders paired by Cityscapes frame (see ``frame_id``), compared
    pixel by pixel (official_code.empty_comparison has the keys)."""
    return oc.compare_pngs(oc.png_pairs(official_dir, our_dir, key=frame_id))


def image_spread(folder: str) -> float:
    """Standard deviation of the grey levels over the PNGs of ``folder`` (shows the random
    generator draws real images, not a flat grey)."""
    import numpy as np
    from PIL import Image

    arrays = [np.asarray(Image.open(os.path.join(folder, n)).convert("RGB"), dtype=np.float64)
              for n in sorted(os.listdir(folder)) if n.endswith(".png")]
    return float(np.concatenate([a.ravel() for a in arrays]).std()) if arrays else 0.0


def our_key_table(args: Sequence[str]) -> Dict[str, List[int]]:
    """Names and shapes of our generator's state_dict built from ``test.py``'s options."""
    from models.networks import define_G
    from options.test_options import TestOptions

    opt = TestOptions().parse(list(args))
    return {k: list(v.shape) for k, v in define_G(opt).state_dict().items()}


def truncated_check(args: Sequence[str], official_folder: str, how_many: int) -> Dict[str, object]:
    """Our generator in this process (strict load, our data pipeline), its float images turned
    into 8 bits the official way (``uint8((x + 1) / 2 * 255)``, truncating; our PNGs round),
    compared with the official PNGs: isolates the network from the 8-bit conversion."""
    import numpy as np
    import torch

    from data import create_dataset
    from models import MODELS
    from options.test_options import TestOptions
    from util import checkpoint

    opt = TestOptions().parse(list(args))
    model = MODELS.get(opt.model)(opt)
    checkpoint.load_networks(model.networks(), os.path.join(opt.checkpoints_dir, opt.name),
                             opt.which_epoch, opt)
    model.eval()
    dataset = create_dataset(opt)
    official = {frame_id(n): n for n in os.listdir(official_folder) if n.endswith(".png")}
    result = oc.empty_comparison()
    with torch.inference_mode():
        for i in range(min(how_many, len(dataset))):
            sample = dataset[i]
            batch = {k: (v.unsqueeze(0) if isinstance(v, torch.Tensor) else [v]) for k, v in sample.items()}
            out = model.inference(batch)[0].float().cpu().numpy().transpose(1, 2, 0)
            ours = np.clip((out + 1) / 2.0 * 255.0, 0, 255).astype(np.uint8)
            frame = frame_id(sample["path"])
            oc.add_difference(result, frame, oc.read_rgb(os.path.join(official_folder, official[frame])), ours)
    return result


def fixture_text(flags: Sequence[str], table: Dict[str, List[int]]) -> str:
    """JSON of a key table, one tensor per line: ``{"official_flags": [...], "state_dict":
    {name: shape}}`` (names in the official state_dict's order)."""
    rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items()]
    return ('{"official_flags": ' + json.dumps(list(flags)) + ',\n "state_dict": {\n'
            + ",\n".join(rows) + "\n }\n}\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    oc.add_official_options(p, "folder of a checkout of github.com/tamarott/ASAPNet",
                            "PYTHONPATH for the official runs only (where `dill` and `dominate` are installed)",
                            CONFIGS, default_configs="cs256,cs512")
    p.add_argument("--samples", default=os.path.join(os.path.dirname(REPO), "shared", "samples"),
                   help="samples folder with cityscapes/ in its official layout")
    p.add_argument("--how_many", type=int, default=2, help="label maps synthesized per configuration")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--write_fixtures", default=None,
                   help="also write the official key/shape tables as DIR/asapnet_<config>.json")
    return p


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    a = build_parser().parse_args(argv)
    official_src = check_official(a.official)
    configs = oc.parse_configs(a.configs, CONFIGS)
    if a.how_many < 1:
        raise OptionError(f"--how_many must be at least 1 (got {a.how_many})")
    work = oc.work_folder(a.work, "compare_official_asapnet_")
    samples = os.path.abspath(a.samples)
    official = patch_official(official_src, os.path.join(work, "official"))
    official_root = official_layout(samples, os.path.join(work, "cityscapes_official_folders"))
    maker = os.path.join(official, "make_random_checkpoint.py")  # beside its packages
    with open(maker, "w") as f:
        f.write(MAKER)
    # two threads each; PYTHONPATH only for the official side (its dill, dominate)
    official_env, our_env = oc.child_env(a.official_pythonpath, threads=2), oc.child_env(threads=2)
    summary: Dict[str, object] = {"work": work, "configs": {}}
    for config in configs:
        base = os.path.join(work, config)
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(os.path.join(base, "checkpoints", config))
        common = ["--name", config, "--checkpoints_dir", os.path.join(base, "checkpoints"),
                  "--dataset_mode", "cityscapes", "--phase", "train", "--gpu_ids", "-1",
                  "--nThreads", "0", "--how_many", str(a.how_many), "--which_epoch", "latest",
                  "--batchSize", "1"] + CONFIGS[config]
        ckpt = os.path.join(base, "checkpoints", config, "latest_net_G.pth")
        table_path = os.path.join(base, "official_keys.json")
        print(f"[{config}] official random checkpoint", file=sys.stderr)
        oc.run([a.python, maker, json.dumps(common + ["--dataroot", official_root]), ckpt, table_path,
                str(a.seed)], official, official_env, os.path.join(base, "make.log"))
        print(f"[{config}] official test.py", file=sys.stderr)
        oc.run([a.python, "test.py"] + common + ["--dataroot", official_root,
                                                 "--results_dir", os.path.join(base, "official")],
               official, official_env, os.path.join(base, "official.log"))
        ours_args = common + ["--dataroot", os.path.join(samples, "cityscapes"), "--netG", "asapnet"]
        print(f"[{config}] our test.py", file=sys.stderr)
        oc.run([a.python, "test.py"] + ours_args + ["--results_dir", os.path.join(base, "ours")],
               REPO, our_env, os.path.join(base, "ours.log"))
        with open(table_path) as f:
            theirs = json.load(f)
        mine = our_key_table(ours_args)
        same_keys = list(theirs) == list(mine)
        same_shapes = same_keys and all(theirs[k] == mine[k] for k in theirs)
        images = ["images", "synthesized_image"]
        check = compare_images(os.path.join(base, "official", config, "train_latest", *images),
                               os.path.join(base, "ours", config, "train_latest", *images))
        check["truncated"] = truncated_check(
            ours_args, os.path.join(base, "official", config, "train_latest", *images), a.how_many)
        check.update({"keys": len(theirs), "same_key_names_in_order": same_keys,
                      "same_shapes": same_shapes, "strict_load": "ok (our test.py, strict=True)",
                      "official_grey_std": image_spread(os.path.join(base, "official", config,
                                                                     "train_latest", *images))})
        summary["configs"][config] = check
        if a.write_fixtures:
            os.makedirs(a.write_fixtures, exist_ok=True)
            with open(os.path.join(a.write_fixtures, f"asapnet_{config}.json"), "w") as f:
                f.write(fixture_text(CONFIGS[config] + ["--dataset_mode", "cityscapes"], theirs))
        print(f"{config}: {check['keys']} tensors, names {'equal' if same_keys else 'DIFFER'}, "
              f"shapes {'equal' if same_shapes else 'DIFFER'}; strict load ok; "
              f"{oc.comparison_line(check)} (official grey-level std "
              f"{check['official_grey_std']:.1f}; ours rounds to 8 bits, the official code "
              f"truncates); with the official truncation: max {check['truncated']['max_abs_diff']}, "
              f"{check['truncated']['differing']} values differ")
    with open(os.path.join(work, "compare.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    from util.cli import run_reporting_errors
    run_reporting_errors(lambda: main(sys.argv[1:]))
