"""Two CPU processes (gloo DDP + cross-process batch norm) give the gradients of one process
on the same global batch; this runs the same launcher and code path as multi-GPU training."""
from __future__ import annotations

import pytest
import torch

from options.train_options import TrainOptions
from trainers.train_loop import TrainingRun
from util import distributed

ARGS = ["--gpu_ids", "-1", "--dataset_mode", "synthetic", "--crop_size", "64", "--load_size", "64",
        "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss", "--batchSize", "2",
        "--synthetic_num", "8", "--no_flip", "--no_html"]


def _gradients(args, out_path) -> None:
    """Per process: one G backward and one D backward on the first global batch."""
    # float64: batch norm over a few pixels amplifies float32 rounding to ~1e-3, which would
    # hide a real error; in float64 the two runs agree to ~1e-15.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        opt = TrainOptions().parse(args, save=False)
        with distributed.process_group(opt.gpu_ids) as ctx:
            grads = _first_batch_gradients(opt, ctx)
            if ctx.is_main:
                torch.save(grads, out_path)
    finally:  # one process runs in the test's own process: leave its default as found
        torch.set_default_dtype(previous)


def _first_batch_gradients(opt, ctx) -> dict:
    run = TrainingRun(opt)
    run.close()  # the run lock: the next launch's rank 0 is another process on the same folder
    run.loader.sampler.set_epoch(1)
    batch = next(iter(run.loader))
    batch["image"] = batch["image"].double()
    batch["depth"] = batch["depth"].double()
    nets = run.trainer.networks()
    run.trainer.generator_backward(batch)
    grads = {f"{short}.{k}": p.grad.clone() for short, net in nets.items()
             if not short.startswith("D") for k, p in net.named_parameters()}
    run.trainer.discriminator_backward(batch)
    grads.update({f"{short}.{k}": p.grad.clone() for short, net in nets.items()
                  if short.startswith("D") for k, p in net.named_parameters()})
    grads["paths"] = list(batch["path"])
    all_paths = [None] * ctx.world_size
    if ctx.is_distributed:
        torch.distributed.all_gather_object(all_paths, grads["paths"])
        grads["paths"] = sorted(p for ps in all_paths for p in ps)
    return grads


@pytest.fixture
def udgan_args(tmp_path):
    """UDGAN: depth generator + depth discriminator behind a frozen (saved) estimator."""
    from models.networks.depth_estimators import save_estimator
    from models.networks.depth_unet import DepthUNet

    torch.manual_seed(3)
    path = str(tmp_path / "estimator.pth")
    save_estimator(path, DepthUNet(3, 4, 2), "unet", {"ngf": 4, "num_down": 2})
    return ["--netG", "depthspade", "--ngf_depth", "4", "--depth_num_down", "2",
            "--depth_estimator_path", path]


# The zoo: pix2pix's U-Net (batch norm -> SyncBatchNorm; dropout off, its masks differ between
# runs), pix2pixHD (instance norm) and ASAPNet (per-pixel MLPs), each with its preset.
ZOO_ARGS = {
    "unet": ["--preset", "pix2pix", "--num_downs", "4", "--no_dropout", "--n_layers_D", "2"],
    "pix2pixhd": ["--preset", "pix2pixhd", "--resnet_n_blocks", "1", "--resnet_n_downsample", "2"],
    "asapnet": ["--preset", "asapnet", "--lr_width", "4", "--lr_max_width", "8", "--lr_depth", "1",
                "--hr_width", "4", "--hr_depth", "2", "--learned_ds_factor", "4"],
}


@pytest.mark.parametrize("model", ["spade", "udgan", *ZOO_ARGS])
def test_two_process_gradients_equal_one_process(tmp_path, model, request):
    extra = request.getfixturevalue("udgan_args") if model == "udgan" else ZOO_ARGS.get(model, [])
    args = ARGS + extra + ["--checkpoints_dir", str(tmp_path)]
    distributed.launch(_gradients, (args, tmp_path / "one.pt"), gpu_ids=[], nprocs=1)
    distributed.launch(_gradients, (args, tmp_path / "two.pt"), gpu_ids=[], nprocs=2)
    one = torch.load(tmp_path / "one.pt")
    two = torch.load(tmp_path / "two.pt")
    assert sorted(one.pop("paths")) == two.pop("paths")  # same global batch, split in two
    assert one.keys() == two.keys()
    if model == "udgan":
        assert any(k.startswith("G_depth.") for k in one) and any(k.startswith("D_depth.") for k in one)
    # The generator's SPADE norms are batch norms (spectralspadesyncbatch3x3): its gradients
    # only agree when the statistics span both processes.
    for k in one:
        scale = one[k].abs().max().clamp(min=1e-12)
        assert (one[k] - two[k]).abs().max() <= 1e-9 * scale + 1e-12, k


def test_torchrun_two_cpu_processes_train_and_only_rank0_writes(tmp_path):
    """The cluster command line, on CPU: torchrun, gloo, global batch split in two."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "train.py", *ARGS[:-1], "--batchSize", "4", "--niter", "1", "--print_freq", "4",
         "--display_freq", "4", "--checkpoints_dir", str(tmp_path), "--name", "ddp",
         "--eval_freq", "8", "--eval_num", "5"],  # 5 maps over 2 processes: one is padding
        cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "ddp"
    assert (folder / "latest_net_G.pth").is_file() and (folder / "web" / "index.html").is_file()
    log = (folder / "loss_log.txt").read_text().splitlines()
    # 8 samples, global batch 4: 2 iterations, each printed once (by rank 0 only)
    iters = [int(line.split("iters: ")[1].split(",")[0]) for line in log if "iters: " in line]
    assert iters == [4, 8]
    assert result.stderr.count("training finished") == 1
    # Validation FID of the two processes (gathered, padding dropped) equals one process's.
    import json

    from models import MODELS
    from trainers.periodic_eval import PeriodicEvaluator
    from util import checkpoint
    history = json.loads((folder / "eval_log.json").read_text())
    assert [h["step"] for h in history] == [8]
    opt = TrainOptions().parse([*ARGS[:-1], "--batchSize", "4", "--checkpoints_dir", str(tmp_path),
                                "--name", "ddp_check", "--eval_freq", "8", "--eval_num", "5"], save=False)
    distributed.setup(opt.gpu_ids)
    try:
        model = MODELS.get(opt.model)(opt)
        checkpoint.load_networks(model.networks(), str(folder), "latest", opt)
        single = PeriodicEvaluator(opt, torch.device("cpu")).evaluate(model, 1, 8)
    finally:
        distributed.cleanup()
    assert single["fid"] == pytest.approx(history[0]["fid"], rel=1e-4)


def _register_exit_marker(folder) -> None:
    import atexit
    import os

    rank = os.environ["RANK"]
    atexit.register(lambda: (folder / f"exit_hook_{rank}").write_text("ran"))
    if os.environ.get("UDGAN_TEST_FAIL_RANK") == rank:
        raise RuntimeError("worker failed on purpose")


def test_spawned_workers_end_after_their_exit_hooks(tmp_path, monkeypatch):
    """Finished workers skip the interpreter teardown (where gloo can abort at random) but still
    run their atexit hooks; a worker that fails still fails the launch."""
    distributed.launch(_register_exit_marker, (tmp_path,), gpu_ids=[], nprocs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exit_hook_0", "exit_hook_1"]
    monkeypatch.setenv("UDGAN_TEST_FAIL_RANK", "1")
    (tmp_path / "failed").mkdir()
    with pytest.raises(Exception, match="worker failed on purpose"):
        distributed.launch(_register_exit_marker, (tmp_path / "failed",), gpu_ids=[], nprocs=2)
