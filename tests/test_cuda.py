"""The CUDA subset: every GPU code path at tiny sizes, on device 0.

    python -m pytest -m cuda tests        # on a machine with a GPU (well under 5 minutes)

Without a CUDA device conftest.py skips these with that command as the reason. Everything is
written against ``DEVICE`` / ``GPU`` so the bodies also run on the CPU: with
``UDGAN_CUDA_TESTS_ON_CPU=1`` they are unmarked and use ``--gpu_ids -1`` (and torch.compile's
eager backend), and tests/test_cuda_bodies_on_cpu.py runs them so in the CPU suite, so that a
changed API breaks them where everyone sees it, not first on a GPU.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import test as test_script
import train as train_script
from conftest import TINY_TRAIN
from options.train_options import TrainOptions
from test_train_generator_zoo import BASE as ZOO_BASE
from test_train_generator_zoo import RECIPES
from trainers.train_loop import TrainingRun
from util import checkpoint, distributed

ON_CPU = os.environ.get("UDGAN_CUDA_TESTS_ON_CPU") == "1"
pytestmark = [] if ON_CPU else pytest.mark.cuda

GPU = ["--gpu_ids", "-1" if ON_CPU else "0"]
DEVICE = torch.device("cpu") if ON_CPU else torch.device("cuda", 0)
# the default of --compile: Triton kernels on CUDA (on the CPU, inductor would spend minutes in
# the C++ compiler: the eager backend checks the wrapping and the checkpoint names)
COMPILE_BACKEND = "eager" if ON_CPU else "inductor"
ON_CUDA = DEVICE.type == "cuda"
ROOT = Path(__file__).resolve().parents[1]


def _on_device(args):
    """CPU test arguments (``--gpu_ids -1``) with GPU's device instead."""
    out = list(args)
    i = out.index("--gpu_ids")
    out[i:i + 2] = GPU
    return out


TINY = _on_device(TINY_TRAIN)
# fp16: at 32 px the generator's first layers see 1x1 maps, where a batch norm over two values
# gives non-finite fp16 gradients at any loss scale (seen on CPU), so GradScaler would skip
# every generator step; 64 px (2x2) is the smallest size that trains.
FP16 = ["--amp", "fp16", "--crop_size", "64", "--load_size", "64"]


@pytest.fixture
def tiny_args(tmp_path):
    return TINY + ["--checkpoints_dir", str(tmp_path / "checkpoints"), "--name", "tiny"]


@contextlib.contextmanager
def _training(args):
    """A TrainingRun inside its process group (as train.py's process has it)."""
    opt = TrainOptions().parse(args)
    distributed.setup(opt.gpu_ids)
    try:
        run = TrainingRun(opt)
        try:
            yield run
        finally:
            run.close()
    finally:
        distributed.cleanup()


def _devices(module):
    return {t.device for t in list(module.parameters()) + list(module.buffers())}


def _snapshot(net):
    return {k: p.detach().clone() for k, p in net.named_parameters()}


@pytest.fixture
def strict_fp32(monkeypatch):
    """cuDNN convolutions in true float32: on Ampere and later they default to TF32 (10-bit
    mantissa, ~1e-3 relative error), which would hide a real difference in a comparison."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _depth_estimator(folder: Path):
    from models.networks.depth_estimators import save_estimator
    from models.networks.depth_unet import DepthUNet

    torch.manual_seed(1)
    path = str(folder / "estimator.pth")
    save_estimator(path, DepthUNet(3, 4, 2), "unet", {"ngf": 4, "num_down": 2})
    return ["--ngf_depth", "4", "--depth_num_down", "2", "--depth_estimator_path", path]


# ------------------------------------------------------------------ the zoo: train, save, resume
ZOO = ["depthspade", *sorted(RECIPES)]


@pytest.mark.parametrize("netG", ZOO)
def test_train_save_resume_on_the_gpu(tmp_path, netG):
    """train.py for an epoch on the GPU; the checkpoint holds CPU tensors (it loads on a machine
    without one); --continue_train puts networks, optimizer state and the frozen helpers back on
    the GPU and trains epoch 2."""
    ckpt = tmp_path / "checkpoints"
    extra = {"spade": [], "depthspade": ["--netG", "depthspade", *_depth_estimator(tmp_path)]}.get(
        netG, RECIPES.get(netG))
    args = _on_device(ZOO_BASE) + extra + ["--checkpoints_dir", str(ckpt), "--name", netG]
    train_script.main(args)
    folder = ckpt / netG
    first = torch.load(folder / "latest_net_G.pth", weights_only=True)  # no map_location
    assert first["options"]["netG"] == netG
    assert {v.device.type for v in first["state_dict"].values()} == {"cpu"}
    saved = checkpoint.load_train_state(str(folder), "latest")
    with _training(args + ["--continue_train", "--niter", "2"]) as run:
        assert run.counter.state_dict() == saved["counter"]
        assert _devices(run.model) == {DEVICE}  # G, D, (E), VGG, depth estimator alike
        for name, optimizer in run.trainer.optimizers().items():
            moments = [t for s in optimizer.state.values() for k, t in s.items()
                       if k in ("exp_avg", "exp_avg_sq")]
            assert moments and {t.device for t in moments} == {DEVICE}, name
            for key, state in saved[f"optimizer_{name}"]["state"].items():
                assert torch.equal(optimizer.state_dict()["state"][key]["exp_avg"].cpu(), state["exp_avg"])
        run.run()
        assert run.trainer.generated["image"].device == DEVICE
        assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())
    assert re.search(r"\(epoch: 2, iters: \d+", (folder / "loss_log.txt").read_text())
    second = torch.load(folder / "latest_net_G.pth", weights_only=True)["state_dict"]
    assert any(not torch.equal(first["state_dict"][k], v) for k, v in second.items())


# ------------------------------------------------------------------ mixed precision
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_mixed_precision_trains_saves_and_resumes(tiny_args, tmp_path, amp):
    """Autocast through the fast SPADE layers; weights and Adam moments stay float32; fp16's
    GradScaler state is saved and restored (bf16 has none)."""
    args = tiny_args + (FP16 if amp == "fp16" else ["--amp", amp]) + ["--spade_impl", "fast"]
    with _training(args) as run:
        before = _snapshot(run.trainer.networks()["G"])
        run.run()
        after = _snapshot(run.trainer.networks()["G"])
        assert any(not torch.equal(before[k], after[k]) for k in before)  # not every step skipped
        assert run.trainer.generated["image"].dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        assert run.trainer.generated["image"].device == DEVICE
        assert {p.dtype for p in run.model.parameters()} == {torch.float32}
        assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())
    state = checkpoint.load_train_state(str(tmp_path / "checkpoints" / "tiny"), "latest")
    assert bool(state["scaler_G"]) == (amp == "fp16")  # a disabled scaler has an empty state
    with _training(args + ["--continue_train", "--niter", "2"]) as run:
        if amp == "fp16":
            assert run.trainer.scaler_G.get_scale() == state["scaler_G"]["scale"] > 0
            assert run.trainer.scaler_D.get_scale() == state["scaler_D"]["scale"] > 0
        run.run()
        assert run.counter.epoch == 3
        assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())


def test_fp16_overflow_step_is_skipped_and_training_goes_on(tiny_args):
    """An inf gradient (what fp16 overflow produces): GradScaler must skip the optimizer step
    (weights and Adam moments unchanged; the fused Adam kernel reads the inf flag on the
    device), halve the scale, and the next step must update the weights again."""
    with _training(tiny_args + FP16 + ["--spade_impl", "fast"]) as run:
        trainer = run.trainer
        batch = next(iter(run.loader))
        scaler = trainer.scaler_G
        # First steps may overflow by themselves while the scale settles: go on until one doesn't.
        for _ in range(20):
            before = scaler.get_scale()
            trainer.run_generator_one_step(batch)
            if scaler.get_scale() == before:
                break
        assert scaler.get_scale() == before, "every fp16 step overflowed"
        netG = trainer.networks()["G"]
        weights = _snapshot(netG)
        moments = {id(p): trainer.optimizer_G.state[p]["exp_avg"].clone() for p in netG.parameters()}
        poisoned = next(p for p in netG.parameters() if p.requires_grad)
        handle = poisoned.register_hook(lambda g: torch.full_like(g, float("inf")))
        try:
            trainer.run_generator_one_step(batch)
        finally:
            handle.remove()
        assert scaler.get_scale() == before * scaler.get_backoff_factor()
        for k, p in netG.named_parameters():
            assert torch.equal(p.detach(), weights[k]), k
            assert torch.equal(trainer.optimizer_G.state[p]["exp_avg"], moments[id(p)]), k
        trainer.run_generator_one_step(batch)
        assert scaler.get_scale() == before * scaler.get_backoff_factor()  # no new overflow
        after = _snapshot(netG)
        assert any(not torch.equal(after[k], weights[k]) for k in weights)
        assert all(torch.isfinite(v).all() for v in after.values())


# ------------------------------------------------------------------ speed options
def test_channels_last_trains_and_matches_contiguous_output(tiny_args, tmp_path, strict_fp32):
    """NHWC weights on the GPU train and save plain checkpoints; the NHWC network computes what
    the NCHW one does (different cuDNN kernels: float32 rounding apart, 1e-4 on [-1, 1])."""
    with _training(tiny_args + ["--channels_last", "--amp", "bf16"]) as run:
        run.run()
        netG = run.trainer.networks()["G"]
        assert netG.conv_img.weight.is_contiguous(memory_format=torch.channels_last)
        assert netG.conv_img.weight.device == DEVICE
        assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())
        batch = next(iter(run.loader))
        model = run.model.eval()
        with torch.no_grad():
            torch.manual_seed(1)
            nhwc = model.inference(batch).float()
            netG.to(memory_format=torch.contiguous_format)
            torch.manual_seed(1)
            nchw = model.inference(batch).float()
    assert nhwc.device == DEVICE
    assert (nhwc - nchw).abs().max() < 1e-4
    saved = torch.load(tmp_path / "checkpoints" / "tiny" / "latest_net_G.pth", weights_only=True)
    assert {v.device.type for v in saved["state_dict"].values()} == {"cpu"}
    assert not any("_orig_mod" in k or k.startswith("module.") for k in saved["state_dict"])


def test_compile_one_step_with_fast_spade(tmp_path):
    """torch.compile (inductor: Triton kernels) around G and D, with the fast SPADE layers, for
    one iteration; checkpoints keep the plain names. Smallest nets: compiling is the cost."""
    args = _on_device(TINY_TRAIN) + [
        "--compile", "--compile_backend", COMPILE_BACKEND, "--spade_impl", "fast", "--num_D", "1",
        "--n_layers_D", "1", "--synthetic_num", "2", "--checkpoints_dir", str(tmp_path), "--name", "c"]
    with _training(args) as run:
        run.run()
        assert hasattr(run.model.netG, "_orig_mod") and hasattr(run.model.netD, "_orig_mod")
        assert run.counter.total_steps == 2
        assert run.trainer.generated["image"].device == DEVICE
        assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())
    saved = torch.load(tmp_path / "c" / "latest_net_G.pth", weights_only=True)["state_dict"]
    assert saved and not any("_orig_mod" in k or k.startswith("module.") for k in saved)


def test_gradient_checkpointing_one_step(tiny_args):
    with _training(tiny_args + ["--gradient_checkpointing", "--synthetic_num", "2"]) as run:
        before = _snapshot(run.trainer.networks()["G"])
        run.run()
        after = _snapshot(run.trainer.networks()["G"])
        assert run.trainer.generated["image"].device == DEVICE
        assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def _blocky_semantics(n, h, w, classes, block=8, seed=0):
    """One-hot labels in ``block``-px regions plus an instance-edge channel."""
    from models.pix2pix_model import instance_edges, one_hot_labels

    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, classes, (n, 1, h // block + 1, w // block + 1), generator=g)
    label = cells.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :h, :w]
    inst = torch.randint(0, 3, label.shape, generator=g) * 100 + label
    return torch.cat([one_hot_labels(label, classes).float(), instance_edges(inst).float()], 1)


def test_fast_and_conv_spade_agree_on_the_gpu(strict_fp32):
    """Same weights, --spade_impl conv vs fast, float32 on the GPU: outputs and gradients.

    Tolerance 1e-4 relative: both are float32 with different summation orders (a one-hot conv
    vs a gather of weight columns) through batch norms over small maps, ~3e-6 apart on CPU;
    the float64 CPU test shows they are the same function to 1e-10, so 1e-4 is a real error,
    not rounding. TF32 is off (fixture): it alone would differ by ~1e-3."""
    import argparse
    import copy

    from models.networks.generators.spade import SPADEGenerator

    opt = argparse.Namespace(
        ngf=8, use_vae=False, z_dim=8, label_nc=20, contain_dontcare_label=False, semantic_nc=21,
        crop_size=64, aspect_ratio=1.0, num_upsampling_layers="normal",
        norm_G="spectralspadesyncbatch3x3", output_nc=3, spade_impl="conv")
    torch.manual_seed(0)
    conv = SPADEGenerator(opt).to(DEVICE)
    fast = copy.deepcopy(conv)
    fast.spade_impl = "fast"
    semantics = _blocky_semantics(2, 64, 64, 20).to(DEVICE)
    weight = torch.linspace(-1, 1, 2 * 3 * 64 * 64, device=DEVICE).view(2, 3, 64, 64)
    results = []
    for net in (conv, fast):
        net.train()
        torch.manual_seed(1)
        out = net(semantics)
        (out * weight).sum().backward()  # every output pixel's gradient matters
        results.append((out.detach(), {k: p.grad for k, p in net.named_parameters()}))
    (out_c, grads_c), (out_f, grads_f) = results
    assert out_c.device == DEVICE and out_c.shape == (2, 3, 64, 64)
    assert (out_c - out_f).abs().max() < 1e-4 * out_c.abs().max()
    assert grads_c.keys() == grads_f.keys()
    # Biases right before a norm have (mathematically) zero gradient, in float32 ~1e-7 of the
    # network's largest: measure those against 1% of that (on CPU in float32 every tensor
    # agreed to 3e-6 of its own size, and to 6e-7 of the largest gradient).
    floor = 1e-2 * max(g.abs().max() for g in grads_c.values())
    for k in grads_c:
        err = (grads_c[k] - grads_f[k]).abs().max() / torch.maximum(grads_c[k].abs().max(), floor)
        assert err < 1e-4, (k, float(err))


# ------------------------------------------------------------------ processes
def test_torchrun_one_process_trains_on_the_gpu(tmp_path):
    """The cluster command line with one GPU. (One process starts no process group; NCCL
    itself is the next test.)"""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
         "train.py", *TINY, "--checkpoints_dir", str(tmp_path), "--name", "tr"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("training finished") == 1
    assert "CUDA is not available" not in result.stderr
    state = checkpoint.load_train_state(str(tmp_path / "tr"), "latest")
    assert state["counter"]["total_steps"] == 8
    assert ("cuda" in state["rng"]) == ON_CUDA  # the saved RNG state includes the GPU's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_process_group_backend_ddp_and_collectives(tiny_args, monkeypatch):
    """util/distributed.py picks NCCL for a GPU and wraps G and D in DDP. Two NCCL ranks cannot
    share one GPU, so this is rank 0 of a 2-process launch whose group is really made with one
    rank: DDP's broadcast and gradient all-reduce, the loop's all-reduces and barriers all run
    over NCCL. (SyncBatchNorm skips its collective in a group of one: that needs two GPUs.)"""
    from torch.nn.parallel import DistributedDataParallel

    calls = []
    real_init = torch.distributed.init_process_group

    def group_of_one(backend=None, rank=0, world_size=1, **kwargs):
        calls.append({"backend": backend, "world_size": world_size, **kwargs})
        real_init(backend=backend, rank=0, world_size=1, **kwargs)
    monkeypatch.setattr(torch.distributed, "init_process_group", group_of_one)
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    args = tiny_args + ["--batchSize", "4", "--print_freq", "2"]  # 2 per process
    with _training(args) as run:
        expected = "nccl" if ON_CUDA else "gloo"
        assert calls == [{"backend": expected, "world_size": 2, "timeout": calls[0]["timeout"],
                          "device_id": DEVICE if ON_CUDA else None}]
        assert torch.distributed.get_backend() == expected
        assert isinstance(run.model.netG, DistributedDataParallel)
        assert isinstance(run.model.netD, DistributedDataParallel)
        if ON_CUDA:
            assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in run.model.netG.modules())
        run.run()
        assert run.loader.batch_size == 2
        assert run.counter.total_steps == 8  # this rank's half of the data, counted globally
        assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())
    assert not torch.distributed.is_initialized()


def test_pinned_memory_loader_feeds_the_gpu(tiny_args):
    """On CUDA the loader pins batches (with worker processes too) and the model copies them
    to the device without blocking."""
    with _training(tiny_args + ["--nThreads", "2"]) as run:
        assert run.loader.pin_memory == ON_CUDA
        batch = next(iter(run.loader))
        for key in ("label", "image", "instance"):
            assert batch[key].device.type == "cpu" and batch[key].is_pinned() == ON_CUDA, key
        semantics, image = run.model.preprocess_input(batch)
        assert semantics.device == image.device == DEVICE
        run.trainer.run_generator_one_step(batch)
        assert run.trainer.generated["image"].device == DEVICE


# ------------------------------------------------------------------ test.py and evaluate.py
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE model trained on the GPU (the VAE: test.py draws noise on the device)."""
    root = tmp_path_factory.mktemp("cuda_trained")
    train_script.main(TINY + ["--checkpoints_dir", str(root / "checkpoints"), "--name", "tiny", "--use_vae"])
    return root


def _test_py(root: Path, results: Path, monkeypatch, extra=()):
    """test.py on the GPU; returns the float images of its picture columns (per label map:
    synthesized_image, synthesized_image_2, real_image), in the order it saved them."""
    seen = []
    real = test_script.visuals_to_images

    def recording(visuals, palette):
        seen.extend(v.data.detach().float().clone() for v in visuals.values() if v.kind == "image")
        return real(visuals, palette)
    monkeypatch.setattr(test_script, "visuals_to_images", recording)
    test_script.main([*GPU, "--checkpoints_dir", str(root / "checkpoints"), "--name", "tiny",
                      "--results_dir", str(results), "--load_from_opt_file", "--how_many", "4",
                      "--batchSize", "2", "--synthetic_num", "4", "--num_samples", "2", *extra])
    monkeypatch.setattr(test_script, "visuals_to_images", real)
    return seen, results / "tiny" / "test_latest"


def test_test_py_runs_on_the_gpu(trained, tmp_path, monkeypatch):
    import json

    seen, out = _test_py(trained, tmp_path / "results", monkeypatch, extra=["--amp", "bf16"])
    manifest = json.loads((out / "results.json").read_text())
    assert manifest["num_images"] == 4 and manifest["timing"]["device"] == str(DEVICE)
    assert manifest["timing"]["sec_per_image"] > 0
    for kind in ("synthesized_image", "synthesized_image_2", "real_image"):
        assert len(list((out / "images" / kind).glob("*.png"))) == 4, kind
    assert len(seen) == 12 and all(torch.isfinite(t).all() for t in seen)


def test_test_py_output_is_reproducible_with_cudnn_benchmark(trained, tmp_path, monkeypatch):
    """Two test.py runs (cudnn.benchmark on, as test.py sets it; VAE noise from the seeded GPU
    generator) give the same float images. Same process, so cuDNN reuses the algorithms it
    picked; a different choice would still be float32 rounding apart, hence 1e-5, not 0."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    first, _ = _test_py(trained, tmp_path / "a", monkeypatch)
    assert torch.backends.cudnn.benchmark == ON_CUDA  # test.py switched it on
    second, _ = _test_py(trained, tmp_path / "b", monkeypatch)
    assert len(first) == len(second) == 12
    worst = max(float((a - b).abs().max()) for a, b in zip(first, second))
    assert worst <= 1e-5, worst
    # and the two samples per label map differ: the noise really is drawn
    assert not torch.equal(first[0], first[1])


def test_evaluate_fid_on_the_gpu_matches_the_cpu(trained, tmp_path, monkeypatch, strict_fp32):
    """scripts/evaluate.py FID with the Inception on the GPU: the features equal the CPU's to
    float32 rounding (1e-3 of the largest; TF32 off) and both FIDs are finite and close."""
    from evaluation.inception import InceptionFeatures
    from scripts import evaluate as evaluate_script

    _, out = _test_py(trained, tmp_path / "results", monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # weights from the package only
    runs = []
    real_forward = InceptionFeatures.forward

    def recording(self, images):
        features = real_forward(self, images)
        runs[-1].append((self.device, features.detach().cpu()))  # features come back on the CPU
        return features
    monkeypatch.setattr(InceptionFeatures, "forward", recording)
    fid = {}
    for gpu_ids in ("-1", GPU[1]):
        runs.append([])
        report = evaluate_script.run([str(out), "--gpu_ids", gpu_ids, "--num_workers", "0",
                                      "--metrics", "fid", "--no_page",
                                      "--out", str(tmp_path / f"m{gpu_ids}.json")])
        fid[gpu_ids] = report["metrics"]["fid"]
    (cpu_devices, on_cpu), (devices, on_device) = [zip(*run) for run in runs]
    assert set(cpu_devices) == {torch.device("cpu")} and set(devices) == {DEVICE}
    on_cpu, on_device = torch.cat(on_cpu).double(), torch.cat(on_device).double()
    assert on_cpu.shape == on_device.shape == (8, 2048)  # 4 synthesized, 4 real
    assert (on_cpu - on_device).abs().max() <= 1e-3 * on_cpu.abs().max()
    assert all(np.isfinite(v) and v > 0 for v in fid.values())
    assert fid[GPU[1]] == pytest.approx(fid["-1"], rel=0.05)
