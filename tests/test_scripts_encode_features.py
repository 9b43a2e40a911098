"""scripts/encode_features.py on a tiny --instance_feat run, then test.py --load_features."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import test as test_script
import train as train_script
from models.networks.feature_encoder import load_cluster_file
from models.pix2pix_model import Pix2PixModel
from options.test_options import TestOptions

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("encode_features", ROOT / "scripts" / "encode_features.py")
encode_features = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(encode_features)

TRAIN = ["--gpu_ids", "-1", "--dataset_mode", "synthetic", "--crop_size", "32", "--load_size", "32",
         "--ngf", "4", "--ndf", "4", "--num_D", "1", "--n_layers_D", "2", "--no_vgg_loss",
         "--batchSize", "2", "--synthetic_num", "2", "--niter", "1", "--print_freq", "100",
         "--display_freq", "100", "--save_latest_freq", "1000", "--netG", "pix2pixhd",
         "--resnet_n_downsample", "2", "--resnet_n_blocks", "1", "--instance_feat", "--nef", "4",
         "--n_downsample_E", "2", "--name", "hd"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run trained for 1 iteration with --instance_feat, its training set encoded (3 clusters)."""
    checkpoints = tmp_path_factory.mktemp("encode") / "checkpoints"
    train_script.main(TRAIN + ["--checkpoints_dir", str(checkpoints)])
    encode_features.main(["--gpu_ids", "-1", "--checkpoints_dir", str(checkpoints), "--name", "hd",
                          "--load_from_opt_file", "--synthetic_num", "2", "--n_clusters", "3",
                          "--kmeans", "numpy"])
    return checkpoints


def test_encode_features_writes_official_layout(trained, capsys):
    folder = trained / "hd"
    assert (folder / "latest_net_E.pth").is_file()
    records = np.load(folder / "features.npy", allow_pickle=True).item()
    assert sorted(records) == list(range(12)) and all(v.shape[1] == 4 for v in records.values())
    assert sum(len(v) for v in records.values()) > 4  # several regions per image
    centres = np.load(folder / "features_clustered_003.npy", allow_pickle=True).item()
    assert centres and all(c.ndim == 2 and 1 <= c.shape[0] <= 3 and c.shape[1] == 3
                           for c in centres.values())
    # only classes with a region above 1/64 of the image are clustered, each from its own records
    for label, c in centres.items():
        big = records[label][records[label][:, -1] > 0.5, :-1]
        assert len(big) and c.shape[0] == min(3, len(big))
        assert (c.min(0) >= big.min(0) - 1e-9).all() and (c.max(0) <= big.max(0) + 1e-9).all()
    assert load_cluster_file(str(folder / "features_clustered_003.npy"), 3).keys() == centres.keys()


def _test_args(trained: Path, results: Path, seed: int):
    return ["--gpu_ids", "-1", "--checkpoints_dir", str(trained), "--name", "hd", "--load_from_opt_file",
            "--results_dir", str(results), "--how_many", "2", "--synthetic_num", "2",
            "--load_features", "--n_clusters", "3", "--seed", str(seed)]


def test_test_with_load_features_is_reproducible_under_a_seed(trained, tmp_path):
    for run in ("a", "b"):
        test_script.main(_test_args(trained, tmp_path / run, 5))
    images = [sorted((tmp_path / run / "hd" / "test_latest" / "images" / "synthesized_image").glob("*.png"))
              for run in ("a", "b")]
    assert len(images[0]) == 2
    assert [p.read_bytes() for p in images[0]] == [p.read_bytes() for p in images[1]]
    # the seed chooses the centres: the same seed gives the same feature maps, another seed others
    batch = {k: v.unsqueeze(0) if torch.is_tensor(v) else [v] for k, v in _first_sample(trained).items()}
    maps = []
    for seed in (5, 5, 6):
        model = Pix2PixModel(TestOptions().parse(_test_args(trained, tmp_path, seed)))
        maps.append(torch.cat([model.instance_features(batch) for _ in range(3)]))
    assert torch.equal(maps[0], maps[1]) and not torch.equal(maps[0], maps[2])
    assert model.netE is None  # the cluster file replaces the encoder


def _first_sample(trained: Path):
    from data import create_dataset
    return create_dataset(TestOptions().parse(_test_args(trained, trained, 0)))[0]


def test_missing_or_mismatched_cluster_file_is_one_clear_error(trained, tmp_path, capsys):
    with pytest.raises(SystemExit):
        test_script.main(_test_args(trained, tmp_path, 0) + ["--n_clusters", "7"])
    err = capsys.readouterr().err
    assert "features_clustered_007.npy does not exist" in err and "scripts/encode_features.py --name hd" in err
    assert "Traceback" not in err
    other = trained / "hd" / "features_clustered_002.npy"
    np.save(other, {5: np.zeros((2, 4))})
    with pytest.raises(SystemExit):
        test_script.main(_test_args(trained, tmp_path, 0) + ["--n_clusters", "2"])
    err = capsys.readouterr().err
    assert "4-dimensional" in err and "--feat_num 3" in err and "Traceback" not in err


def test_numpy_kmeans_is_seeded_and_finds_separated_clusters():
    rng = np.random.default_rng(1)
    means = np.array([[-5.0, 0, 0], [0, 5, 0], [5, 0, 5]])
    points = np.concatenate([m + 0.1 * rng.standard_normal((20, 3)) for m in means])
    a = encode_features.kmeans_numpy(points, 3, seed=0)
    assert np.array_equal(a, encode_features.kmeans_numpy(points, 3, seed=0))
    found = a[np.argsort(a[:, 0])]
    np.testing.assert_allclose(found, means[np.argsort(means[:, 0])], atol=0.1)
    # duplicates only: fewer distinct points than clusters still gives k centres
    assert encode_features.kmeans_numpy(np.ones((4, 3)), 3, seed=0).shape == (3, 3)


def test_cluster_features_applies_the_area_threshold():
    records = {1: np.array([[0.0, 0.0, 0.6], [1.0, 1.0, 0.6], [9.0, 9.0, 0.5]]),
               2: np.array([[3.0, 3.0, 0.1]]), 3: np.zeros((0, 3))}
    centres = encode_features.cluster_features(records, 10, 0, None)
    assert sorted(centres) == [1]
    np.testing.assert_allclose(np.sort(centres[1], axis=0), [[0, 0], [1, 1]])
