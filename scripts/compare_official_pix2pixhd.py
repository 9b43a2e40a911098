"""Fidelity of ``--netG pix2pixhd`` against NVIDIA's official pix2pixHD: its files, its images.

    python scripts/compare_official_pix2pixhd.py --official /path/to/pix2pixHD \
        [--samples /work/shared/samples] [--how_many 3] [--load_size 256] [--ngf 8] [--work DIR]

For each configuration (``global``: official ``--netG global`` with instance edges;
``global_no_instance``: the same with ``--no_instance``; ``local``: ``--netG local``, one local
enhancer) it

1. builds the official Pix2PixHDModel with tiny widths on the CPU and saves its random
   initialization with the official ``save`` (``latest_net_G.pth``, ``latest_net_D.pth``);
2. runs the official ``test.py`` (``--resize_or_crop scale_width --loadSize L``) on the first
   ``--how_many`` Cityscapes val label maps (+ instance maps) of the samples folder;
3. runs our ``test.py`` (``--netG pix2pixhd --preprocess_mode scale_width --load_size L``) on the
   same files from the same checkpoint folder (``--which_epoch latest``, strict loading);
4. compares the synthesized images pixel by pixel (grey levels 0..255).

The official code runs from a copy under ``WORK/official`` with the smallest patch that lets it
run on a CPU (``.cuda()`` calls and ``torch.cuda.*Tensor`` removed from models/pix2pixHD_model.py)
and that saves PNG instead of JPEG (util/visualizer.py), so that the comparison is lossless. It
needs ``dominate`` (pass a folder holding packages only the official code needs with
``--official_pythonpath``). The official images truncate ``(x + 1) / 2 * 255`` to an integer,
ours round it: a difference of at most 1 grey level, ours never below, is an exact match of the
networks.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import official_code as oc  # noqa: E402
from util.errors import OptionError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_FILES = ("test.py", "models/pix2pixHD_model.py", "models/networks.py",
                  "options/base_options.py", "util/visualizer.py")
# (file, text, replacement): the CPU / PNG patch of the official copy; every text must occur.
PATCHES = (
    ("models/pix2pixHD_model.py", "torch.cuda.FloatTensor(", "torch.FloatTensor("),
    ("models/pix2pixHD_model.py", "torch.cuda.ByteTensor(", "torch.ByteTensor("),
    ("models/pix2pixHD_model.py", ".cuda()", ""),
    ("util/visualizer.py", "image_name = '%s_%s.jpg' % (name, label)",
     "image_name = '%s_%s.png' % (name, label)"),
)
# A driver run inside the official copy: its options, its model, its own save code.
MAKE_CHECKPOINT = """import torch
from options.train_options import TrainOptions
from models.models import create_model
opt = TrainOptions().parse(save=False)
torch.manual_seed(0)
create_model(opt).save("latest")
"""
CONFIGS = ("global", "global_no_instance", "local")
# With --spade: SPADE's own Pix2PixHDGenerator, built and run by SPADE's code, saved as its
# state_dict; our loader must read it through the documented key translation.
SPADE_DRIVER = """import argparse, sys, torch
from models.networks.generator import Pix2PixHDGenerator
norm, ngf, n_blocks, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
opt = argparse.Namespace(label_nc=35, contain_dontcare_label=False, no_instance=False, ngf=ngf,
                         norm_G=norm, resnet_n_downsample=4, resnet_n_blocks=n_blocks,
                         resnet_kernel_size=3, resnet_initial_kernel_size=7, output_nc=3)
torch.manual_seed(0)
g = Pix2PixHDGenerator(opt)
g.init_weights("xavier", 0.02)
x = torch.zeros(2, 36, 64, 128).scatter_(1, torch.randint(0, 35, (2, 1, 64, 128)), 1.0)
x[:, 35] = (torch.rand(2, 64, 128) > 0.9).float()
with torch.no_grad():
    g(x)  # training-mode pass: batch-norm running statistics, spectral-norm vectors
    g.eval()
    y = g(x)
torch.save(g.state_dict(), out + "/latest_net_G.pth")
torch.save({"input": x, "output": y}, out + "/io.pt")
"""
SPADE_NORMS = ("spectralinstance", "spectralbatch")


def check_official(path: Optional[str]) -> str:
    """The absolute path of an official pix2pixHD checkout, or an OptionError saying what is wrong."""
    return oc.check_official(path, "pix2pixHD", "github.com/NVIDIA/pix2pixHD", OFFICIAL_FILES)


def prepare_official(root: str, target: str) -> str:
    """Copy the code of the official checkout to ``target`` and patch it for the CPU (PATCHES)."""
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.makedirs(target)
    for entry in ("models", "options", "util", "data"):
        shutil.copytree(os.path.join(root, entry), os.path.join(target, entry))
    shutil.copy(os.path.join(root, "test.py"), target)
    oc.replace_in_copy(root, target, PATCHES, "docs/pix2pixhd.md")
    with open(os.path.join(target, "make_checkpoint.py"), "w") as f:
        f.write(MAKE_CHECKPOINT)
    return target


def cityscapes_val_pairs(samples: str, how_many: int) -> List[Dict[str, str]]:
    """The first ``how_many`` (by name) Cityscapes val label maps with their instance maps."""
    val = os.path.join(samples, "cityscapes", "gtFine", "val")
    if not os.path.isdir(val):
        raise OptionError(f"--samples {samples}: no cityscapes/gtFine/val; give the shared samples "
                          "folder (Cityscapes in its official layout)")
    pairs = []
    for city in sorted(os.listdir(val)):
        for name in sorted(os.listdir(os.path.join(val, city))):
            if name.endswith("_gtFine_labelIds.png"):
                label = os.path.join(val, city, name)
                inst = label.replace("_gtFine_labelIds.png", "_gtFine_instanceIds.png")
                if os.path.isfile(inst):
                    pairs.append({"city": city, "label": label, "instance": inst})
    if len(pairs) < how_many:
        raise OptionError(f"--how_many {how_many}: {val} has only {len(pairs)} label/instance pairs")
    return sorted(pairs, key=lambda p: os.path.basename(p["label"]))[:how_many]


def link_data(pairs: Sequence[Dict[str, str]], work: str) -> Dict[str, str]:
    """The same files in both layouts: official ``test_label`` / ``test_inst`` and ours
    (Cityscapes' ``gtFine/val/<city>``)."""
    official = os.path.join(work, "official_data")
    ours = os.path.join(work, "cityscapes")
    for folder in (official, ours):  # a --work folder of an earlier run: start afresh
        shutil.rmtree(folder, ignore_errors=True)
    for pair in pairs:
        for sub, key in (("test_label", "label"), ("test_inst", "instance")):
            for folder in (os.path.join(official, sub), os.path.join(ours, "gtFine", "val", pair["city"])):
                os.makedirs(folder, exist_ok=True)
                os.symlink(pair[key], os.path.join(folder, os.path.basename(pair[key])))
    return {"official": official, "ours": ours}


def config_flags(config: str, ngf: int, n_blocks: int) -> Dict[str, List[str]]:
    """Flags of one configuration for the official code and for ours."""
    official = ["--ngf", str(ngf), "--n_blocks_global", str(n_blocks), "--label_nc", "35"]
    ours = ["--netG", "pix2pixhd", "--ngf", str(ngf), "--resnet_n_blocks", str(n_blocks),
            "--label_nc", "35", "--norm_G", "instance"]
    if config == "global_no_instance":
        official.append("--no_instance")
        ours.append("--no_instance")
    if config == "local":
        official += ["--netG", "local", "--n_local_enhancers", "1", "--n_blocks_local", "2"]
        ours += ["--n_local_enhancers", "1", "--n_blocks_local", "2"]
    return {"official": official, "ours": ours}


def compare_folder(official_dir: str, ours_dir: str, names: Sequence[str]) -> Dict[str, object]:
    """Pixel statistics of ours - official over the synthesized images ``names`` (the official
    test.py writes ``<name>_synthesized_image.png``, ours ``<name>.png``)."""
    return oc.compare_pngs((name, os.path.join(official_dir, name + "_synthesized_image.png"),
                            os.path.join(ours_dir, name + ".png")) for name in names)


def compare(official: str, samples: str, work: str, how_many: int, load_size: int, ngf: int,
            n_blocks: int, configs: Sequence[str], official_pythonpath: Optional[str]) -> Dict[str, Dict]:
    code = prepare_official(official, os.path.join(work, "official"))
    pairs = cityscapes_val_pairs(samples, how_many)
    data = link_data(pairs, work)
    names = [os.path.basename(p["label"])[:-len(".png")] for p in pairs]
    env, official_env = oc.child_env(), oc.child_env(official_pythonpath)
    checkpoints = os.path.join(work, "checkpoints")
    results: Dict[str, Dict] = {}
    for config in configs:
        flags = config_flags(config, ngf, n_blocks)
        common = ["--name", config, "--checkpoints_dir", checkpoints, "--gpu_ids", "-1"]
        oc.run([sys.executable, "make_checkpoint.py", *common, *flags["official"], "--no_vgg_loss",
             "--ndf", str(ngf)], code, official_env, os.path.join(work, f"{config}_official_save.log"))
        oc.run([sys.executable, "test.py", *common, *flags["official"], "--dataroot", data["official"],
             "--results_dir", os.path.join(work, "official_results"), "--loadSize", str(load_size),
             "--resize_or_crop", "scale_width", "--how_many", str(how_many)],
            code, official_env, os.path.join(work, f"{config}_official_test.log"))
        oc.run([sys.executable, os.path.join(REPO, "test.py"), *common, *flags["ours"],
             "--dataset_mode", "cityscapes", "--dataroot", data["ours"], "--results_dir",
             os.path.join(work, "our_results"), "--preprocess_mode", "scale_width", "--load_size",
             str(load_size), "--crop_size", str(load_size), "--aspect_ratio", "2",
             "--which_epoch", "latest", "--how_many", str(how_many), "--nThreads", "0"],
            REPO, env, os.path.join(work, f"{config}_ours_test.log"))
        import torch
        state = torch.load(os.path.join(checkpoints, config, "latest_net_G.pth"), map_location="cpu",
                           weights_only=True)
        results[config] = {"strict_load": f"ok ({len(state)} tensors)", **compare_folder(
            os.path.join(work, "official_results", config, "test_latest", "images"),
            os.path.join(work, "our_results", config, "test_latest", "images", "synthesized_image"), names)}
    return results


def compare_spade(spade: str, work: str, ngf: int, n_blocks: int,
                  pythonpath: Optional[str]) -> Dict[str, Dict]:
    """SPADE's Pix2PixHDGenerator files (made by SPADE's code) through our loader: max abs
    difference of the outputs (floats) for each of SPADE_NORMS."""
    import torch
    from models.networks import define_G
    from util import checkpoint
    from argparse import Namespace
    for f in ("models/networks/generator.py", "models/networks/sync_batchnorm/__init__.py"):
        if not os.path.isfile(os.path.join(spade, f)):
            raise OptionError(f"--spade {spade}: no {f}; give a checkout of NVlabs' SPADE with "
                              "sync_batchnorm copied in as its README says")
    driver = os.path.join(work, "spade_driver.py")
    with open(driver, "w") as f:
        f.write(SPADE_DRIVER)
    env = oc.child_env([spade] + ([pythonpath] if pythonpath else []))
    results = {}
    for norm in SPADE_NORMS:
        out = os.path.join(work, "spade_" + norm)
        os.makedirs(out, exist_ok=True)
        oc.run([sys.executable, driver, norm, str(ngf), str(n_blocks), out], spade, env,
            os.path.join(work, f"spade_{norm}.log"))
        opt = Namespace(netG="pix2pixhd", norm_G=norm, semantic_nc=36, output_nc=3, ngf=ngf,
                        resnet_n_downsample=4, resnet_n_blocks=n_blocks, resnet_kernel_size=3,
                        resnet_initial_kernel_size=7, n_local_enhancers=0, n_blocks_local=3,
                        crop_size=128, aspect_ratio=2.0, use_vae=False, init_type="xavier",
                        init_variance=0.02, label_nc=35, no_instance=False, contain_dontcare_label=False)
        net = define_G(opt).eval()
        checkpoint.load_network(net, os.path.join(out, "latest_net_G.pth"), opt, "G")
        io = torch.load(os.path.join(out, "io.pt"), map_location="cpu", weights_only=True)
        with torch.no_grad():
            diff = (net(io["input"]) - io["output"]).abs().max().item()
        results[norm] = {"tensors": len(torch.load(os.path.join(out, "latest_net_G.pth"),
                                                   map_location="cpu", weights_only=True)),
                         "max_abs_diff": diff}
    return results


def table(results: Dict[str, Dict]) -> str:
    rows = ["| configuration | strict load of latest_net_G.pth | images | max abs diff (grey levels) "
            "| values differing | differing by > 1 | ours - official |", "|---|---|---|---|---|---|---|"]
    for config, r in results.items():
        rows.append(f"| {config} | {r['strict_load']} | {r['images']} | {r['max_abs_diff']} | "
                    f"{r['differing']} / {r['values']} | {r['differing_by_more_than_1']} | "
                    f"{r['ours_minus_official'][0]}..{r['ours_minus_official'][1]} |"
                    + (f" missing in ours: {', '.join(r['missing'])}" if r["missing"] else ""))
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", type=str, default=None, help="checkout of NVIDIA/pix2pixHD")
    p.add_argument("--samples", type=str, default="/work/shared/samples",
                   help="folder holding cityscapes/gtFine/val in the official layout")
    p.add_argument("--work", type=str, default=None, help="working folder (default: a temp folder, removed)")
    p.add_argument("--how_many", type=int, default=3, help="label maps to synthesize")
    p.add_argument("--load_size", type=int, default=256, help="width the label maps are scaled to")
    p.add_argument("--ngf", type=int, default=8, help="generator width of both")
    p.add_argument("--n_blocks", type=int, default=2, help="residual blocks of the global generator")
    p.add_argument("--configs", type=str, default=",".join(CONFIGS), help="comma-separated subset of "
                   + ", ".join(CONFIGS))
    p.add_argument("--official_pythonpath", type=str, default=None,
                   help="PYTHONPATH for the official runs (packages only it needs, e.g. dominate, dill)")
    p.add_argument("--spade", type=str, default=None,
                   help="also check SPADE's Pix2PixHDGenerator files: a checkout of NVlabs/SPADE "
                        "(with sync_batchnorm copied in; dill on --official_pythonpath)")
    args = p.parse_args(argv)
    official = check_official(args.official)
    configs = oc.parse_configs(args.configs, CONFIGS)
    if args.how_many < 1 or args.load_size % 32 or args.load_size < 64:
        raise OptionError("--how_many must be at least 1 and --load_size a multiple of 32 from 64 up "
                          "(the local enhancer halves a 2:1 image 5 times)")
    work = oc.work_folder(args.work, "compare_pix2pixhd_")
    try:
        results = compare(official, os.path.abspath(args.samples), work, args.how_many,
                          args.load_size, args.ngf, args.n_blocks, configs, args.official_pythonpath)
        spade = (compare_spade(os.path.abspath(args.spade), work, args.ngf, args.n_blocks,
                               args.official_pythonpath) if args.spade else {})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    for norm, r in spade.items():
        print(f"SPADE Pix2PixHDGenerator --norm_G {norm}: {r['tensors']} tensors loaded through the key "
              f"translation, max abs output difference {r['max_abs_diff']:.3g}")
    return {**results, **{"spade_" + k: v for k, v in spade.items()}}


if __name__ == "__main__":
    from util.cli import run_reporting_errors
    run_reporting_errors(lambda: main(sys.argv[1:]))
