"""Screenshots of the training page and the test page of a tiny run, for docs/pages.md.

    python docs/make_page_screenshots.py [OUT_DIR]    (default: docs/images)

Trains the synthetic dataset for one short epoch on the CPU, runs test.py, and saves
``training_page.png`` (1400 x 1800) and ``test_page.png`` (1400 x 900) with headless Chromium. The test page
gets the dataset's colour legend the way test.py adds it with ``ResultsPage.set_legend``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN = ["--gpu_ids", "-1", "--dataset_mode", "synthetic", "--crop_size", "64", "--load_size", "64",
         "--ngf", "8", "--ndf", "8", "--num_D", "1", "--n_layers_D", "2", "--no_vgg_loss",
         "--batchSize", "2", "--synthetic_num", "8", "--niter", "1", "--print_freq", "2",
         "--display_freq", "4", "--display_winsize", "256", "--num_upsampling_layers", "normal",
         "--name", "tiny"]


def shoot(page: Path, png: Path, profile: Path, height: int = 900) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={profile}", f"--window-size=1400,{height}", f"--screenshot={png}",
                    page.as_uri()], check=True, capture_output=True, timeout=180)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "images").resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    import test as test_script
    import train as train_script
    from data import create_dataset
    from options.test_options import TestOptions
    from util.results_page import ResultsPage

    with tempfile.TemporaryDirectory() as tmp:
        checkpoints, results = Path(tmp, "checkpoints"), Path(tmp, "results")
        train_script.main(TRAIN + ["--checkpoints_dir", str(checkpoints)])
        test_args = ["--gpu_ids", "-1", "--checkpoints_dir", str(checkpoints), "--name", "tiny",
                     "--results_dir", str(results), "--load_from_opt_file", "--how_many", "4"]
        folder = Path(test_script.synthesize(TestOptions().parse(test_args)))
        page = ResultsPage.reopen(str(folder))
        dataset = create_dataset(TestOptions().parse(test_args))
        page.set_legend(dataset.class_names(), dataset.palette())
        page.save()
        shoot(checkpoints / "tiny" / "web" / "index.html", out / "training_page.png", Path(tmp, "p1"), 1800)
        shoot(folder / "index.html", out / "test_page.png", Path(tmp, "p2"))
    print(f"wrote {out / 'training_page.png'} and {out / 'test_page.png'}")


if __name__ == "__main__":
    main()
