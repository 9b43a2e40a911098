"""Convert the NYU Depth v2 labeled set into the folder layout ``--dataset_mode nyu`` reads.

    python datasets/prepare_nyu.py --mat nyu_depth_v2_labeled.mat --mapping classMapping40.mat \\
        --splits splits.mat --out DIR

Inputs (all from the NYU Depth v2 / Gupta et al. releases; nothing here is made up):

* ``--mat``: the official ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, read with h5py).
  MATLAB stores arrays column-major, so HDF5 shows every dimension in reverse order:

      images  (N, 3, W, H) uint8     MATLAB: H x W x 3 x N   (H = 480, W = 640, N = 1449)
      depths  (N, W, H)    float     metres (inpainted)      MATLAB: H x W x N
      labels  (N, W, H)    uint16    894 raw class ids, 0 = unlabeled

  Sample ``i`` is read as ``images[i].transpose(2, 1, 0)`` -> (H, W, 3) and
  ``depths[i].T`` / ``labels[i].T`` -> (H, W).
* ``--mapping``: the 894 -> 40 class mapping (Gupta et al.): ``classMapping40.mat`` (field
  ``mapClass``, values 1..40), or a ``.npy`` / ``.txt`` of 894 integers (raw id ``k`` maps to
  entry ``k - 1``). Values are 1-based (1..40; a 0 entry = unlabeled) when some value is 40 or
  none is 0, else 0-based (0..39). Required: the labeled .mat does not contain it.
* ``--splits``: the official ``splits.mat`` (``trainNdxs``, ``testNdxs``: 1-based indices;
  MATLAB v5, read with scipy; v7.3 also works). Without it every image goes to train/.

Output::

    DIR/{train,test}/image/NNNN.png   RGB photo
    DIR/{train,test}/label/NNNN.png   8-bit: 40-class id 0..39, 255 = unlabeled (raw id 0)
    DIR/{train,test}/depth/NNNN.png   16-bit: min(1, 1 m / depth) * 65535, 0 = no depth

``NNNN`` is the 1-based index of the image in the .mat file (the numbering ``splits.mat``
uses), zero-padded to 4 digits. Files are written atomically, so an interrupted run can simply
be started again.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from util.image_io import atomic_write_bytes  # noqa: E402

NUM_RAW_CLASSES = 894
NUM_CLASSES = 40
UNLABELED = 255
MAT_URL = "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat"
SPLITS_URL = "http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat"
MAPPING_HELP = ("the 894 -> 40 class mapping is not inside nyu_depth_v2_labeled.mat: pass "
                "--mapping classMapping40.mat (Gupta et al., 'Perceptual Organization and "
                "Recognition of Indoor Scenes from RGB-D Images', CVPR 2013; distributed with their "
                "code and with most NYUv2-40 benchmarks; field mapClass, 894 values 1..40), or a "
                ".npy/.txt holding those 894 integers")


class PrepareError(Exception):
    """A problem with the inputs; main() prints it without a traceback."""


# ------------------------------------------------------------------ reading inputs
def _read_mat_field(path: str, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Fields of a .mat file: MATLAB v5 via scipy, v7.3 (HDF5) via h5py. Missing fields are left
    out of the result."""
    import scipy.io
    try:
        mat = scipy.io.loadmat(path)
        return {n: np.asarray(mat[n]) for n in names if n in mat}
    except Exception as e:  # v7.3: scipy raises NotImplementedError ("use HDF reader")
        reason = str(e).strip()[:200] or type(e).__name__
    try:
        import h5py
    except ImportError:
        h5py = None
    if h5py is None or not h5py.is_hdf5(path):
        extra = "" if h5py is not None else " (for MATLAB v7.3 files: pip install h5py)"
        raise PrepareError(f"{path}: cannot be read as a .mat file ({reason}){extra}")
    with h5py.File(path, "r") as f:
        return {n: np.asarray(f[n]) for n in names if n in f}


def _h5py():
    try:
        import h5py
    except ImportError:
        raise PrepareError("reading MATLAB v7.3 files (nyu_depth_v2_labeled.mat) needs h5py: "
                           "pip install h5py") from None
    return h5py


def load_mapping(path: str) -> np.ndarray:
    """A lookup table ``lut[raw id] -> 40-class id`` (0..39, 255 for raw id 0): 895 uint8.

    ``path``: .mat with ``mapClass``, or .npy / .txt with 894 integers (see module docstring).
    """
    if not os.path.isfile(path):
        raise PrepareError(f"--mapping {path} does not exist; {MAPPING_HELP}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".mat":
            fields = _read_mat_field(path, ["mapClass"])
            if "mapClass" not in fields:
                raise PrepareError(f"--mapping {path} has no field 'mapClass'; {MAPPING_HELP}")
            values = fields["mapClass"]
        elif ext == ".npy":
            values = np.load(path)
        else:  # text: integers separated by whitespace and/or commas
            with open(path) as f:
                values = np.array(f.read().replace(",", " ").split(), dtype=np.float64)
    except PrepareError:
        raise
    except Exception as e:
        raise PrepareError(f"--mapping {path} cannot be read ({str(e).strip()[:200]})") from None
    values = np.asarray(values, np.float64).ravel()
    if values.size != NUM_RAW_CLASSES:
        raise PrepareError(f"--mapping {path} holds {values.size} values; expected {NUM_RAW_CLASSES} "
                           f"(one 40-class id per raw NYU class 1..{NUM_RAW_CLASSES})")
    if not np.all(values == np.round(values)):
        raise PrepareError(f"--mapping {path} holds non-integer values")
    values = values.astype(np.int64)
    if values.min() < 0 or values.max() > NUM_CLASSES:
        raise PrepareError(f"--mapping {path} holds values {values.min()}..{values.max()}; expected "
                           f"1..{NUM_CLASSES} (classMapping40.mat) or 0..{NUM_CLASSES - 1}")
    lut = np.full(NUM_RAW_CLASSES + 1, UNLABELED, np.uint8)
    if values.max() == NUM_CLASSES or values.min() >= 1:
        # 1-based, as classMapping40.mat: class k -> id k - 1; a 0 entry means "unlabeled"
        lut[1:] = np.where(values == 0, UNLABELED, values - 1)
    else:  # 0-based: already 0..39
        lut[1:] = values
    return lut


def load_splits(path: Optional[str], n: int) -> Dict[str, np.ndarray]:
    """0-based indices per split from splits.mat (1-based ``trainNdxs`` / ``testNdxs``); all to
    train when ``path`` is None."""
    if path is None:
        return {"train": np.arange(n), "test": np.arange(0)}
    if not os.path.isfile(path):
        raise PrepareError(f"--splits {path} does not exist (the official split: {SPLITS_URL})")
    fields = _read_mat_field(path, ["trainNdxs", "testNdxs"])
    missing = [k for k in ("trainNdxs", "testNdxs") if k not in fields]
    if missing:
        raise PrepareError(f"--splits {path} has no field {' or '.join(missing)}; expected the official "
                           f"splits.mat with trainNdxs and testNdxs ({SPLITS_URL})")
    out = {}
    for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
        idx = np.asarray(fields[key], np.float64).ravel()
        bad = idx[(idx < 1) | (idx > n) | (idx != np.round(idx))]
        if bad.size:
            raise PrepareError(f"--splits {path}: {key} holds {bad[0]:g}, outside the 1-based range "
                               f"1..{n} of the {n} images in --mat")
        out[split] = idx.astype(np.int64) - 1
    both = np.intersect1d(out["train"], out["test"])
    if both.size:
        raise PrepareError(f"--splits {path}: image {int(both[0]) + 1} is in both trainNdxs and testNdxs")
    return out


class LabeledMat:
    """Random access to ``nyu_depth_v2_labeled.mat``: ``sample(i)`` -> (H, W, 3) uint8 photo,
    (H, W) depth in metres, (H, W) raw label ids."""

    def __init__(self, path: str, depth_field: str = "depths") -> None:
        if not os.path.isfile(path):
            raise PrepareError(f"--mat {path} does not exist (download it from {MAT_URL})")
        h5py = _h5py()
        try:
            self.file = h5py.File(path, "r")
        except OSError:
            raise PrepareError(f"--mat {path} is not an HDF5 (MATLAB v7.3) file; expected the official "
                               f"nyu_depth_v2_labeled.mat ({MAT_URL})") from None
        f = self.file
        missing = [k for k in ("images", depth_field, "labels") if k not in f]
        if missing:
            self.file.close()
            raise PrepareError(f"--mat {path} has no dataset {', '.join(missing)} (it has: "
                               f"{', '.join(sorted(f.keys()))}); expected nyu_depth_v2_labeled.mat")
        self.images, self.depths, self.labels = f["images"], f[depth_field], f["labels"]
        n = self.images.shape[0]
        ok = (self.images.ndim == 4 and self.images.shape[1] == 3 and self.depths.ndim == 3
              and self.labels.ndim == 3 and self.depths.shape == self.labels.shape
              and self.depths.shape == (n,) + self.images.shape[2:])
        if not ok:
            shapes = (f"images {self.images.shape}, {depth_field} {self.depths.shape}, labels "
                      f"{self.labels.shape}")
            self.file.close()
            raise PrepareError(f"--mat {path}: unexpected shapes ({shapes}); expected images "
                               "(N, 3, W, H), depths and labels (N, W, H) as h5py shows the "
                               "official file")
        self.n = n
        self.width, self.height = self.images.shape[2], self.images.shape[3]

    def sample(self, i: int):
        rgb = np.ascontiguousarray(np.asarray(self.images[i]).transpose(2, 1, 0))  # (3,W,H)->(H,W,3)
        depth = np.ascontiguousarray(np.asarray(self.depths[i]).T)                # (W,H)->(H,W)
        labels = np.ascontiguousarray(np.asarray(self.labels[i]).T)
        return rgb.astype(np.uint8), depth, labels

    def close(self) -> None:
        self.file.close()


# ------------------------------------------------------------------ conversion
def encode_depth(depth_m: np.ndarray) -> np.ndarray:
    """Depth in metres -> 16-bit normalized inverse depth ``min(1, 1 m / depth) * 65535``;
    0 where the depth is 0, negative or not finite (missing)."""
    d = np.asarray(depth_m, np.float64)
    valid = np.isfinite(d) & (d > 0)
    inv = np.zeros(d.shape, np.float64)
    inv[valid] = np.minimum(1.0, 1.0 / d[valid])
    return np.round(inv * 65535).astype(np.uint16)


def map_labels(raw: np.ndarray, lut: np.ndarray, where: str = "") -> np.ndarray:
    """Raw NYU ids (0..894) -> 8-bit 40-class ids (0..39), 255 for raw 0 (unlabeled)."""
    raw = np.asarray(raw).astype(np.int64)
    if raw.size and (raw.min() < 0 or raw.max() > NUM_RAW_CLASSES):
        raise PrepareError(f"{where}labels hold raw id {int(raw.max())}, outside 0..{NUM_RAW_CLASSES}")
    return lut[raw]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_sample(out: str, split: str, name: str, rgb: np.ndarray, depth_m: np.ndarray,
                 raw_labels: np.ndarray, lut: np.ndarray) -> None:
    """Write one sample's image / label / depth PNGs under ``out/split``."""
    label = map_labels(raw_labels, lut, f"image {name}: ")
    for sub, arr in (("image", rgb), ("label", label), ("depth", encode_depth(depth_m))):
        atomic_write_bytes(os.path.join(out, split, sub, name + ".png"), _png(arr))


# ------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mat", required=True, help=f"nyu_depth_v2_labeled.mat ({MAT_URL})")
    p.add_argument("--mapping", default=None,
                   help="894 -> 40 class mapping: classMapping40.mat (mapClass) or .npy/.txt (required)")
    p.add_argument("--splits", default=None,
                   help=f"official splits.mat (trainNdxs/testNdxs, 1-based; {SPLITS_URL}); "
                        "default: every image in train/")
    p.add_argument("--out", required=True, help="output folder (train/ and test/ are created)")
    p.add_argument("--depth_field", default="depths", choices=("depths", "rawDepths"),
                   help="depths: the inpainted maps; rawDepths: the raw Kinect depth (0 = missing)")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                   help="threads encoding and writing PNGs")
    return p


def main(argv: Optional[List[str]] = None) -> str:
    """Convert the dataset; returns the output folder. Input problems exit with a message."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except PrepareError as e:
        raise SystemExit(f"error: {e}") from None


def _run(args: argparse.Namespace) -> str:
    if args.mapping is None:
        raise PrepareError(MAPPING_HELP)
    lut = load_mapping(args.mapping)
    mat = LabeledMat(args.mat, args.depth_field)
    try:
        splits = load_splits(args.splits, mat.n)
        if args.splits is None:
            print(f"note: no --splits given: all {mat.n} images go to {args.out}/train (the "
                  f"official 795/654 split is splits.mat: {SPLITS_URL})", file=sys.stderr)
        jobs = [(split, int(i)) for split in ("train", "test") for i in splits[split]]
        for split in ("train", "test"):
            if splits[split].size:
                for sub in ("image", "label", "depth"):
                    os.makedirs(os.path.join(args.out, split, sub), exist_ok=True)

        def job(item) -> None:
            split, i = item
            rgb, depth, labels = mat.sample(i)  # h5py reads are serialized by its own lock
            write_sample(args.out, split, f"{i + 1:04d}", rgb, depth, labels, lut)

        with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
            for _ in tqdm(pool.map(job, jobs), total=len(jobs), desc="writing NYUv2", unit="image",
                          dynamic_ncols=True, disable=None):
                pass
    finally:
        mat.close()
    counts = ", ".join(f"{splits[s].size} {s}" for s in ("train", "test"))
    print(f"{counts} images in {args.out}; read them with --dataset_mode nyu --dataroot {args.out}",
          file=sys.stderr)
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
