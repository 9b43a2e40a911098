"""``noisy``: (noisy, clean) photo pairs for denoising (ASAPNet's denoising experiment).

Any folder of photos (``--dataroot DIR``, searched recursively) or, without ``--dataroot``, the
photos of the built-in synthetic street scenes (``--synthetic_num``, ``--synthetic_seed``)
become pairs: ``label`` is the NOISY photo, ``image`` the clean one, both ``(3, H, W) float32``
in [-1, 1]. The mode sets ``--label_nc 0`` (the generator input is an image, not a label map)
and ``--no_instance``; ``instance`` / ``depth`` are zeros, ``has_depth`` is False. Every sample
also carries ``sigma``, the noise standard deviation on the 0-255 scale.

Noise model: additive white Gaussian noise of std ``sigma`` on the 0-255 scale, i.e.
``sigma / 255`` in [0, 1] units and ``2 * sigma / 255`` in the [-1, 1] units of the tensors,
drawn independently per pixel and channel AFTER resizing / cropping / flipping. The noisy image
is NOT clipped to [-1, 1] by default (the common DnCNN / FFDNet protocol; some papers clip:
``--noisy_clip``) and not quantized to 8 bits.

- Training (``isTrain``): one sigma per sample, uniform in [``--sigma_min``, ``--sigma_max``]
  (10, 55). Sigma and noise come from a generator seeded by (``--seed``, epoch, index, draw):
  ``set_epoch(e)`` (shared with DataLoader workers, persistent ones included) makes them a
  function of (seed, e, index), so runs and resumed runs are reproducible whatever the number
  of workers; without ``set_epoch`` calls, the per-index draw counter (also shared) still gives
  fresh noise every time a sample is drawn again, i.e. every epoch. Crops / flips follow
  (seed, epoch, index) as in every mode (``BaseDataset.sample_rng``; no draw counter).
- Test phase: every image at every sigma of ``--test_sigmas`` (15,25,50): sample
  ``i * len(sigmas) + j`` is image ``i`` at sigma ``j``, its noise seeded by (seed, i, sigma)
  only, so every run sees the same noisy inputs. ``path`` gets the sigma appended to the stem
  (``.../<stem>_sigma25.png``) so test.py's result names are unique.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from data import DATASETS, examples
from data.base_dataset import BaseDataset, get_params, image_tensor, transform_array
from data.image_folder import IMG_EXTENSIONS, list_files
from data.validation import Problems, check_decoded, run_threaded, scan_header
from datasets.synthetic_scenes import TEST_INDEX_OFFSET, render_scene, split_index
from util.errors import DatasetError, OptionError
from util.options import add_option_once

_TRAIN_STREAM, _TEST_STREAM = 0, 1  # keep train and test noise streams apart


def parse_sigmas(text: Any) -> List[float]:
    """``--test_sigmas`` ("15,25,50" or a list) -> sorted-as-given list of positive floats."""
    items = text if isinstance(text, (list, tuple)) else [t.strip() for t in str(text).split(",")]
    try:
        sigmas = [float(t) for t in items if str(t).strip() != ""]
    except ValueError:
        raise OptionError(f"--test_sigmas {text!r} is not a comma-separated list of numbers "
                          "(noise std on the 0-255 scale, e.g. 15,25,50)") from None
    if not sigmas:
        raise OptionError("--test_sigmas is empty; give at least one noise level, e.g. 15,25,50")
    bad = [s for s in sigmas if not np.isfinite(s) or s < 0]
    if bad:
        raise OptionError(f"--test_sigmas must be finite and >= 0 (got {bad[0]:g})")
    if len(set(sigmas)) != len(sigmas):
        raise OptionError(f"--test_sigmas lists a noise level twice: {text}")
    return sigmas


def sigma_tag(sigma: float) -> str:
    """Sigma as it appears in result names: 25 -> "25", 12.5 -> "12p5" (no dot: the stem
    must survive ``os.path.splitext``)."""
    return f"{sigma:g}".replace(".", "p")


def sigma_key(sigma: float) -> int:
    """Integer seed component for a sigma (milli-units, so 12.5 and 12.25 differ)."""
    return int(round(sigma * 1000))


def add_noise(clean: torch.Tensor, sigma: float, rng: np.random.Generator,
              clip: bool = False) -> torch.Tensor:
    """``clean`` ``(3, H, W) float32`` in [-1, 1] plus Gaussian noise of std ``sigma`` on the
    0-255 scale (``2 * sigma / 255`` here); clipped to [-1, 1] only when ``clip``."""
    noise = rng.standard_normal(tuple(clean.shape), dtype=np.float32)
    noisy = clean + torch.from_numpy(noise).mul_(2.0 * sigma / 255.0)
    return noisy.clamp_(-1.0, 1.0) if clip else noisy


@DATASETS.register("noisy")
class NoisyDataset(BaseDataset):
    """Photos turned into (noisy ``label``, clean ``image``) pairs for denoising."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--sigma_min", type=float, default=10.0,
                        help="noisy mode, training: smallest noise std (0-255 scale)")
        add_option_once(parser, "--sigma_max", type=float, default=55.0,
                        help="noisy mode, training: largest noise std (0-255 scale)")
        add_option_once(parser, "--test_sigmas", type=str, default="15,25,50",
                        help="noisy mode, test phase: every image at each of these noise stds (0-255 scale)")
        add_option_once(parser, "--noisy_clip", action="store_true",
                        help="noisy mode: clip the noisy image to the valid range (default: unclipped)")
        add_option_once(parser, "--synthetic_num", type=int, default=2000 if is_train else 200,
                        help="number of synthetic scenes in the split (without --dataroot)")
        add_option_once(parser, "--synthetic_seed", type=int, default=0,
                        help="world seed of the synthetic scenes (without --dataroot)")
        parser.set_defaults(label_nc=0, no_instance=True, contain_dontcare_label=False,
                            preprocess_mode="resize_and_crop", load_size=286 if is_train else 256,
                            crop_size=256, display_winsize=256)
        return parser

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """A folder of PNG photos (any folder of photos is this mode's layout; the phase does
        not choose files: the test phase reads every photo at each --test_sigmas)."""
        for k in range(num):
            label = examples.label_map([0, 1, 2], size, size, k)
            examples.save(examples.photo(label, k), os.path.join(root, f"photo_{k}.png"))
        return ["--dataroot", root]

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__(opt)
        self.train = bool(opt.isTrain)
        self.seed = int(getattr(opt, "seed", 0) or 0) % 2 ** 63  # seed entropy must be >= 0
        self.clip = bool(getattr(opt, "noisy_clip", False))
        self.sigma_min = float(getattr(opt, "sigma_min", 10.0))
        self.sigma_max = float(getattr(opt, "sigma_max", 55.0))
        self.sigmas = parse_sigmas(getattr(opt, "test_sigmas", "15,25,50"))
        if not (np.isfinite(self.sigma_min) and np.isfinite(self.sigma_max)) or self.sigma_min < 0:
            raise OptionError(f"--sigma_min {self.sigma_min:g} / --sigma_max {self.sigma_max:g} "
                              "must be finite and >= 0 (noise std on the 0-255 scale)")
        if self.sigma_min > self.sigma_max:
            raise OptionError(f"--sigma_min {self.sigma_min:g} is above --sigma_max "
                              f"{self.sigma_max:g}; swap them")
        if getattr(opt, "label_nc", 0) != 0:
            raise OptionError(f"--dataset_mode noisy feeds the noisy photo as the input, so it needs "
                              f"--label_nc 0 (got {opt.label_nc}); drop --label_nc")
        self.root: Optional[str] = getattr(opt, "dataroot", None) or None
        self.paths: List[str] = self._find_photos(opt) if self.root else []
        if self.root is None:
            self.num_synthetic = int(getattr(opt, "synthetic_num", 0) or 0)
            if not 1 <= self.num_synthetic < TEST_INDEX_OFFSET:
                raise OptionError(f"--synthetic_num must be in 1..{TEST_INDEX_OFFSET - 1} "
                                  f"(got {self.num_synthetic})")
        # Shared with DataLoader workers (fork or spawn) like the base class's epoch, so draw
        # counts made in one process are seen by all of them.
        self._draws = torch.zeros(self.num_images(), dtype=torch.int64).share_memory_()

    # ---------------------------------------------------------------- files
    def _find_photos(self, opt: argparse.Namespace) -> List[str]:
        root = str(self.root)
        problems = Problems(f"--dataset_mode noisy, --dataroot {root}, phase {opt.phase}")
        if not os.path.isdir(root):
            raise DatasetError(f"--dataroot {root} does not exist or is not a folder; give a folder "
                               "of photos, or leave --dataroot out to use the synthetic scenes")
        paths = list_files(root, IMG_EXTENSIONS, recursive=True)
        if not paths:
            raise DatasetError(f"--dataroot {root} holds no images ({', '.join(IMG_EXTENSIONS)}), "
                               "also in subfolders; point it at a folder of photos")
        check_decoded(run_threaded(scan_header, paths, "checking photos"), "photo", problems)
        problems.raise_if_any()
        return paths

    def _load_photo(self, path: str) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB; a file that does not decode is a DatasetError naming it."""
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except Exception as e:
            raise DatasetError(f"{path}: photo cannot be decoded ({str(e).strip()[:200] or type(e).__name__}); "
                               "replace or remove the file") from None

    def _synthetic_photo(self, i: int) -> Tuple[np.ndarray, str]:
        """Photo of synthetic scene ``i`` of this split, drawn like the ``synthetic`` mode."""
        opt = self.opt
        base = opt.crop_size if opt.preprocess_mode in ("fixed", "none") else opt.load_size
        w, h = base, max(1, round(base / opt.aspect_ratio))
        seed = int(getattr(opt, "synthetic_seed", 0) or 0)
        image = render_scene(split_index(opt.phase, i), seed, h, w)["image"]
        return image, f"synthetic_{opt.phase}_{i:06d}"

    # ---------------------------------------------------------------- sizes
    def num_images(self) -> int:
        """Clean photos available (before the test phase's per-sigma repetition)."""
        return len(self.paths) if self.root else self.num_synthetic

    def num_samples(self) -> int:
        return self.num_images() if self.train else self.num_images() * len(self.sigmas)

    def set_epoch(self, epoch: int) -> None:
        """Make training noise (and, as in every mode, crops / flips) a function of (seed,
        ``epoch``, index); call before each epoch (seen by DataLoader workers too)."""
        super().set_epoch(epoch)
        self._draws.zero_()

    # ---------------------------------------------------------------- samples
    def clean_image(self, image_index: int) -> Tuple[torch.Tensor, str]:
        """Clean photo ``image_index`` preprocessed (resize / crop / flip): ``(3, H, W) float32``
        in [-1, 1], and its path (a sample name for the synthetic photos)."""
        if self.root:
            path = self.paths[image_index]
            rgb = self._load_photo(path)
        else:
            rgb, path = self._synthetic_photo(image_index)
        # training: image_index is the sample index, so crops / flips follow (seed, epoch, index)
        params = get_params(self.opt, (rgb.shape[1], rgb.shape[0]), self.sample_rng(image_index))
        rgb = transform_array(rgb, params, Image.BICUBIC)
        return image_tensor(rgb, rgb.shape[:2]), path

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is out of range (the split has {len(self)})")
        if self.train:
            image_index = index
            draw = int(self._draws[index])
            self._draws[index] = draw + 1  # one process touches an index at a time
            rng = np.random.default_rng([self.seed, _TRAIN_STREAM, self.epoch, index, draw])
            sigma = float(rng.uniform(self.sigma_min, self.sigma_max))
        else:
            image_index, j = divmod(index, len(self.sigmas))
            sigma = self.sigmas[j]
            rng = np.random.default_rng([self.seed, _TEST_STREAM, image_index, sigma_key(sigma)])
        clean, path = self.clean_image(image_index)
        noisy = add_noise(clean, sigma, rng, self.clip)
        if not self.train:
            stem, ext = os.path.splitext(path) if self.root else (path, "")
            path = f"{stem}_sigma{sigma_tag(sigma)}{ext}"
        h, w = clean.shape[1:]
        return {"label": noisy,
                "instance": torch.zeros((1, h, w), dtype=torch.int64),
                "image": clean,
                "depth": torch.zeros((1, h, w), dtype=torch.float32),
                "depth_valid": torch.zeros((1, h, w), dtype=torch.bool),
                "has_image": True,
                "has_depth": False,
                "path": path,
                "sigma": sigma}

    def class_names(self) -> List[str]:
        return []  # the input is a photo: no classes
