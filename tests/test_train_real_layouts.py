"""train.py and test.py on real data in the official Cityscapes and COCO-Stuff layouts
(the samples in $UDGAN_SAMPLES, default ../shared/samples; skipped where absent)."""
from __future__ import annotations

import re

import test as test_script
import train as train_script

TINY = ["--gpu_ids", "-1", "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss",
        "--batchSize", "2", "--niter", "1", "--max_dataset_size", "4", "--print_freq", "2",
        "--display_freq", "2"]


def _check_results(folder, count, with_real):
    html = (folder / "index.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert all((folder / s).is_file() for s in srcs)
    assert len(list((folder / "images" / "synthesized_image").glob("*.png"))) == count
    assert (folder / "images" / "real_image").is_dir() == with_real


def test_cityscapes_train_and_test_from_labels_alone(tmp_path, shared_samples):
    common = ["--dataroot", str(shared_samples / "cityscapes"), "--dataset_mode", "cityscapes",
              "--crop_size", "64", "--load_size", "64", "--num_upsampling_layers", "normal",
              "--checkpoints_dir", str(tmp_path / "ck"),
              "--name", "city"]
    train_script.main(common + TINY)
    assert (tmp_path / "ck" / "city" / "latest_net_G.pth").is_file()
    # the val split has label and instance maps but no photos
    test_script.main(common + ["--gpu_ids", "-1", "--ngf", "4", "--results_dir",
                               str(tmp_path / "results"), "--how_many", "5", "--batchSize", "2"])
    _check_results(tmp_path / "results" / "city" / "test_latest", 5, with_real=False)


def test_coco_stuff_train_and_test(tmp_path, shared_samples):
    common = ["--dataroot", str(shared_samples / "coco_stuff"), "--dataset_mode", "coco",
              "--crop_size", "32", "--checkpoints_dir", str(tmp_path / "ck"), "--name", "coco"]
    train_script.main(common + TINY + ["--load_size", "40"])
    test_script.main(common + ["--gpu_ids", "-1", "--ngf", "4", "--load_size", "32",
                               "--results_dir", str(tmp_path / "results"), "--how_many", "3"])
    _check_results(tmp_path / "results" / "coco" / "test_latest", 3, with_real=True)
