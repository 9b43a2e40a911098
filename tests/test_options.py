"""Options: SPADE names and defaults, registry hooks, saving and --load_from_opt_file."""
from __future__ import annotations

import json

import pytest

from options.base_options import parse_gpu_ids, save_options
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import OptionError

SPADE_BASE = ["name", "gpu_ids", "checkpoints_dir", "model", "norm_G", "norm_D", "norm_E", "phase",
              "batchSize", "preprocess_mode", "load_size", "crop_size", "aspect_ratio", "label_nc",
              "contain_dontcare_label", "output_nc", "dataroot", "dataset_mode", "serial_batches",
              "no_flip", "nThreads", "max_dataset_size", "load_from_opt_file", "netG", "ngf",
              "init_type", "init_variance", "z_dim", "no_instance", "nef", "use_vae"]
SPADE_TRAIN = ["display_freq", "print_freq", "save_latest_freq", "save_epoch_freq", "no_html",
               "continue_train", "which_epoch", "niter", "niter_decay", "beta1", "beta2", "no_TTUR",
               "lr", "D_steps_per_G", "ndf", "lambda_feat", "lambda_vgg", "no_ganFeat_loss",
               "no_vgg_loss", "gan_mode", "netD", "lambda_kld", "num_D", "n_layers_D"]


def test_spade_option_names_exist(tmp_path):
    opt = TrainOptions().parse(["--checkpoints_dir", str(tmp_path)], save=False)
    missing = [k for k in SPADE_BASE + SPADE_TRAIN if not hasattr(opt, k)]
    assert not missing
    test_opt = TestOptions().parse(["--checkpoints_dir", str(tmp_path)], save=False)
    assert test_opt.results_dir and test_opt.how_many == float("inf")
    assert test_opt.serial_batches and test_opt.no_flip and test_opt.phase == "test"


def test_spade_defaults_and_generator_hook(tmp_path):
    opt = TrainOptions().parse(["--checkpoints_dir", str(tmp_path)], save=False)
    # SPADE's: with TTUR (its default) Adam's betas default to (0, 0.9)
    assert (opt.lr, opt.beta1, opt.beta2, opt.niter, opt.niter_decay) == (0.0002, 0.0, 0.9, 50, 0)
    assert (opt.lambda_feat, opt.lambda_vgg, opt.lambda_kld, opt.gan_mode) == (10.0, 10.0, 0.05, "hinge")
    assert (opt.num_D, opt.n_layers_D, opt.ngf, opt.ndf, opt.z_dim) == (2, 4, 64, 64, 256)
    assert opt.norm_G == "spectralspadesyncbatch3x3"  # set by the spade generator's hook
    assert opt.num_upsampling_layers == "normal"


def test_dataset_mode_defaults(tmp_path):
    opt = TrainOptions().parse(["--checkpoints_dir", str(tmp_path)], save=False)
    assert opt.dataset_mode == "synthetic"  # no --dataroot
    opt = TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--dataroot", "x",
                                "--dataset_mode", "cityscapes"], save=False)
    assert (opt.label_nc, opt.aspect_ratio, opt.preprocess_mode) == (35, 2.0, "fixed")
    assert opt.semantic_nc == 35 + 1  # labels + instance edges
    opt = TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--dataroot", "x",
                                "--dataset_mode", "coco"], save=False)
    assert opt.label_nc == 182 and opt.contain_dontcare_label and opt.semantic_nc == 184
    # the user's flag wins over the dataset's default
    opt = TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--dataroot", "x",
                                "--dataset_mode", "cityscapes", "--label_nc", "20"], save=False)
    assert opt.label_nc == 20


def test_unknown_registry_names_are_clear(tmp_path):
    with pytest.raises(OptionError, match="--netG 'nope'.*spade"):
        TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--netG", "nope"], save=False)
    with pytest.raises(OptionError, match="--dataset_mode 'nope'.*synthetic"):
        TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--dataset_mode", "nope"], save=False)


def test_unknown_flag_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--not_an_option", "1"], save=False)


def test_gpu_ids():
    assert parse_gpu_ids("-1") == []
    assert parse_gpu_ids("0,2") == [0, 2]
    with pytest.raises(OptionError, match="--gpu_ids"):
        parse_gpu_ids("a,b")


def test_options_saved_and_restored(tmp_path):
    args = ["--checkpoints_dir", str(tmp_path), "--name", "exp", "--ngf", "8", "--label_nc", "7",
            "--use_vae"]
    opt = TrainOptions().parse(args)
    assert not (tmp_path / "exp").exists()  # parsing writes nothing: the run does, after its checks
    save_options(opt)
    text = (tmp_path / "exp" / "opt.txt").read_text()
    ngf_line = next(line for line in text.splitlines() if line.strip().startswith("ngf:"))
    assert ngf_line.split()[1] == "8" and "[default: 64]" in ngf_line  # non-defaults are marked
    saved = json.loads((tmp_path / "exp" / "opt.json").read_text())
    assert saved["ngf"] == 8 and saved["label_nc"] == 7 and saved["use_vae"] is True
    restored = TestOptions().parse(["--checkpoints_dir", str(tmp_path), "--name", "exp",
                                    "--load_from_opt_file"], save=False)
    assert (restored.ngf, restored.label_nc, restored.use_vae) == (8, 7, True)
    assert restored.phase == "test"  # run options are not restored
    # an explicit flag still wins
    override = TestOptions().parse(["--checkpoints_dir", str(tmp_path), "--name", "exp",
                                    "--load_from_opt_file", "--ngf", "16"], save=False)
    assert override.ngf == 16


def test_load_from_missing_opt_file(tmp_path):
    with pytest.raises(OptionError, match="opt.json does not exist"):
        TestOptions().parse(["--checkpoints_dir", str(tmp_path), "--name", "none",
                             "--load_from_opt_file"], save=False)


def test_help_lists_the_flags_of_the_chosen_components(capsys):
    """--help prints after the hooks ran: the default generator's, discriminator's and dataset
    mode's flags, and those of components named on the command line."""
    with pytest.raises(SystemExit):
        TrainOptions().parse(["--help"], save=False)
    text = capsys.readouterr().out
    assert "--spade_impl" in text and "--num_D" in text and "--synthetic_num" in text
    with pytest.raises(SystemExit):
        TrainOptions().parse(["--netG", "pix2pixhd", "--help"], save=False)
    assert "--n_local_enhancers" in capsys.readouterr().out
