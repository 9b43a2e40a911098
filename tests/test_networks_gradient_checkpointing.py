"""--gradient_checkpointing: one training step with it gives the weights, gradients and buffers
(spectral-norm u/v, batch-norm running statistics) of the same step without it, while the
recomputed blocks keep no activations; checkpoints and inference are unchanged."""
from __future__ import annotations

import copy

import pytest
import torch

from data import create_dataset
from data.loader import create_dataloader
from models import MODELS
from models.networks import checkpointing
from models.networks.normalization import SPADE
from options.train_options import TrainOptions
from trainers.pix2pix_trainer import Pix2PixTrainer
from util import checkpoint, distributed
from util.errors import OptionError

ARGS = ["--gpu_ids", "-1", "--dataset_mode", "synthetic", "--crop_size", "32", "--load_size", "32",
        "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss", "--batchSize", "2",
        "--synthetic_num", "4", "--no_flip", "--serial_batches"]


def _build(args, tmp_path, on: bool):
    extra = ["--gradient_checkpointing"] if on else []
    opt = TrainOptions().parse(args + extra + ["--checkpoints_dir", str(tmp_path)])
    distributed.setup(opt.gpu_ids)
    torch.manual_seed(0)
    batch = next(iter(create_dataloader(create_dataset(opt), opt.batchSize, shuffle=False, drop_last=False)))
    model = MODELS.get(opt.model)(opt)
    return opt, model, Pix2PixTrainer(opt, model), batch


def _one_step(args, tmp_path, on: bool, micro_batches: int = 1) -> dict:
    """Gradients and then every state_dict entry after one G step and one D step."""
    opt, model, trainer, batch = _build(args, tmp_path, on)
    try:
        if micro_batches > 1:  # --accum_iter: the trainer takes the list of micro-batches
            n = batch["label"].size(0) // micro_batches
            batch = [{k: v[i * n:(i + 1) * n] for k, v in batch.items()} for i in range(micro_batches)]
        nets = trainer.networks()
        torch.manual_seed(1)
        trainer.run_generator_one_step(batch)
        out = {f"grad.{s}.{k}": p.grad.clone() for s, net in nets.items() if not s.startswith("D")
               for k, p in net.named_parameters() if p.grad is not None}
        trainer.run_discriminator_one_step(batch)
        out.update({f"grad.{s}.{k}": p.grad.clone() for s, net in nets.items() if s.startswith("D")
                    for k, p in net.named_parameters()})
        for s, net in nets.items():
            out.update({f"state.{s}.{k}": v.clone() for k, v in net.state_dict().items()})
        out["checkpointed"] = sum(checkpointing.is_checkpointed(m) for net in nets.values() for m in net.modules())
        return out
    finally:
        distributed.cleanup()


def _assert_same(plain: dict, checkpointed: dict, rtol: float = 1e-5) -> None:
    assert plain.pop("checkpointed") == 0 and checkpointed.pop("checkpointed") > 0
    assert plain.keys() == checkpointed.keys()
    for k in plain:
        a, b = plain[k].double(), checkpointed[k].double()
        assert torch.allclose(a, b, rtol=rtol, atol=rtol * a.abs().max().item() + 1e-12), k


CONFIGS = {
    "conv_syncbatch": ["--spade_impl", "conv"],
    "fast_syncbatch": ["--spade_impl", "fast"],
    "conv_instance_vae": ["--spade_impl", "conv", "--norm_G", "spectralspadeinstance3x3", "--use_vae",
                          "--crop_size", "64", "--load_size", "64"],
    "fast_vae_batchnorm_D": ["--spade_impl", "fast", "--use_vae", "--norm_D", "spectralbatch"],
    "bf16": ["--spade_impl", "fast", "--amp", "bf16"],
    "pix2pixhd": ["--preset", "pix2pixhd", "--resnet_n_blocks", "2", "--resnet_n_downsample", "2",
                  "--norm_G", "spectralbatch"],
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_one_step_equals_the_step_without_it(tmp_path, config):
    args = ARGS + CONFIGS[config]
    plain = _one_step(args, tmp_path, on=False)
    ckpt = _one_step(args, tmp_path, on=True)
    # the step really moved the buffers the recompute must not touch twice
    sn = [k for k in plain if k.endswith("weight_u")]
    bn = [k for k in plain if k.endswith("num_batches_tracked")]
    assert sn and (bn or config in ("conv_instance_vae",))
    _assert_same(plain, ckpt)


def test_vgg_loss_slices(tmp_path):
    """The VGG loss is frozen and in eval mode; its slices on the fake image are recomputed."""
    from models.networks.vgg import build_vgg19_features

    torch.manual_seed(5)
    path = tmp_path / "vgg19_features.pth"
    torch.save({k: torch.randn_like(v) * 0.05 for k, v in build_vgg19_features().state_dict().items()}, path)
    args = [a for a in ARGS if a != "--no_vgg_loss"] + ["--vgg_weights", str(path), "--spade_impl", "conv"]
    opt, model, _, _ = _build(args, tmp_path, on=True)
    distributed.cleanup()
    assert all(checkpointing.is_checkpointed(m) for m in model.criterionVGG.vgg)
    _assert_same(_one_step(args, tmp_path, False), _one_step(args, tmp_path, True))


def test_accum_iter_two_micro_batches(tmp_path):
    args = ARGS + ["--accum_iter", "2", "--spade_impl", "fast", "--batchSize", "4"]
    _assert_same(_one_step(args, tmp_path, False, 2), _one_step(args, tmp_path, True, 2))


def test_depthspade_blocks(tmp_path):
    from models.networks.depth_estimators import save_estimator
    from models.networks.depth_unet import DepthUNet

    torch.manual_seed(3)
    path = str(tmp_path / "estimator.pth")
    save_estimator(path, DepthUNet(3, 4, 2), "unet", {"ngf": 4, "num_down": 2})
    args = ARGS + ["--netG", "depthspade", "--ngf_depth", "4", "--depth_num_down", "2",
                   "--depth_estimator_path", path]
    _assert_same(_one_step(args, tmp_path, False), _one_step(args, tmp_path, True))


def _saved_bytes(fn) -> int:
    """Bytes autograd keeps for backward while ``fn`` runs (tensors saved inside a checkpointed
    block are not kept: the checkpoint's own hooks replace them by placeholders)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


@pytest.mark.parametrize("impl", ["conv", "fast"])
def test_generator_blocks_keep_no_activations(tmp_path, impl, monkeypatch):
    opt, model, trainer, batch = _build(ARGS + ["--spade_impl", impl, "--crop_size", "64",
                                                "--load_size", "64"], tmp_path, on=False)
    try:
        semantics, _ = model.preprocess_input(batch)
        netG = model.netG
        plain = _saved_bytes(lambda: netG(semantics))
        checkpointing.apply(model, _with(opt, gradient_checkpointing=True))
        ckpt = _saved_bytes(lambda: netG(semantics))
        # only fc, the upsamplings' inputs and conv_img keep their inputs
        assert ckpt < 0.2 * plain, (ckpt, plain)
        model.eval()  # inference: the plain forward, nothing recomputed
        with torch.no_grad():
            counted = _count_checkpoint_calls(lambda: netG(semantics))
        assert counted == 0
        model.train()
        # head, 2 middle and 4 up blocks; their 18 SPADE layers are replayed, not checkpointed
        assert _count_checkpoint_calls(lambda: netG(semantics)) == 7
        # each SPADE layer runs twice per step (forward, its own backward), not three times
        # (a nested checkpoint would also run it in its block's recompute)
        runs = []
        original = SPADE.forward

        def counting(self, *a, **k):
            runs.append(1)
            return original(self, *a, **k)
        monkeypatch.setattr(SPADE, "forward", counting)
        netG(semantics).square().mean().backward()
        monkeypatch.undo()
        assert len(runs) == 2 * 18
    finally:
        distributed.cleanup()


def _weight_copies(net) -> int:
    """Spectral-norm layers of ``net`` holding a normalized weight copy (not ``weight_orig``)."""
    return sum(m.weight.data_ptr() != m.weight_orig.data_ptr()
               for m in net.modules() if hasattr(m, "weight_orig"))


def test_vae_encoder_recomputed_as_a_whole(tmp_path):
    opt, model, trainer, batch = _build(ARGS + ["--use_vae", "--crop_size", "64", "--load_size", "64"],
                                        tmp_path, on=False)
    try:
        _, real = model.preprocess_input(batch)
        netE = model.netE
        plain = _saved_bytes(lambda: netE(real))
        done = checkpointing.apply(model, _with(opt, gradient_checkpointing=True))
        assert "E" in done and checkpointing.is_checkpointed(netE)
        # only the image (its input) is kept
        assert _saved_bytes(lambda: netE(real)) <= real.numel() * real.element_size() < 0.1 * plain
        assert _count_checkpoint_calls(lambda: netE(real)) == 1
    finally:
        distributed.cleanup()


@pytest.mark.parametrize("on", [False, True])
def test_d_step_keeps_no_spectral_norm_weight_copies_of_g_and_e(tmp_path, on):
    """The D step's generator and encoder run without gradients: with the option their
    blocks drop the normalized weight copies spectral norm keeps as attributes (about G's
    size), as they do after a forward with gradients; without it the copies stay."""
    opt, model, trainer, batch = _build(ARGS + ["--use_vae", "--spade_impl", "fast"], tmp_path, on=on)
    try:
        trainer.run_generator_one_step(batch)
        copies_after_g = _weight_copies(model.netG) + _weight_copies(model.netE)
        trainer.run_discriminator_one_step(batch)
        copies = _weight_copies(model.netG) + _weight_copies(model.netE)
        if on:
            assert copies_after_g == 0 and copies == 0 and _weight_copies(model.netD) == 0
        else:  # the test can tell: every layer keeps its copy
            assert copies > 0
    finally:
        distributed.cleanup()


def _with(opt, **values):
    opt = copy.copy(opt)
    vars(opt).update(values)
    return opt


def _count_checkpoint_calls(fn) -> int:
    calls = []
    original = checkpointing.checkpoint

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)
    checkpointing.checkpoint = counting
    try:
        fn()
    finally:
        checkpointing.checkpoint = original
    return len(calls)


def test_checkpoint_saved_with_it_loads_without_it(tmp_path):
    opt, model, trainer, batch = _build(ARGS, tmp_path, on=True)
    try:
        trainer.run_generator_one_step(batch)
        trainer.run_discriminator_one_step(batch)
        checkpoint.save_checkpoint(str(tmp_path / "run"), "latest", trainer.networks(), opt, step=1)
        plain_opt, plain, _, _ = _build(ARGS, tmp_path, on=False)
        assert {k: list(n.state_dict()) for k, n in plain.networks().items()} == \
               {k: list(n.state_dict()) for k, n in trainer.networks().items()}
        checkpoint.load_networks(plain.networks(), str(tmp_path / "run"), "latest", plain_opt)
        model.eval()
        plain.eval()
        torch.manual_seed(2)
        a = model.inference(batch)
        torch.manual_seed(2)
        assert torch.equal(a, plain.inference(batch))
        # a deep copy (e.g. an EMA generator) recomputes its own blocks, not the original's
        clone = copy.deepcopy(trainer.networks()["G"])
        block = clone.head_0
        assert checkpointing.is_checkpointed(block) and block.forward.__self__ is block
    finally:
        distributed.cleanup()


def test_generators_without_blocks_and_compile_are_refused(tmp_path):
    with pytest.raises(OptionError, match="--gradient_checkpointing.*--netG unet"):
        _build(ARGS + ["--preset", "pix2pix", "--num_downs", "4"], tmp_path, on=True)
    distributed.cleanup()
    with pytest.raises(OptionError, match="--gradient_checkpointing and --compile"):
        _build(ARGS + ["--compile"], tmp_path, on=True)
    distributed.cleanup()


def test_two_processes_with_it_equal_one_process_without(tmp_path):
    """gloo DDP + cross-process batch norm (whose recompute all-reduces again in backward)."""
    from test_trainers_ddp import ARGS as DDP_ARGS, _gradients

    args = DDP_ARGS + ["--checkpoints_dir", str(tmp_path), "--spade_impl", "fast"]
    distributed.launch(_gradients, (args, tmp_path / "one.pt"), gpu_ids=[], nprocs=1)
    distributed.launch(_gradients, (args + ["--gradient_checkpointing"], tmp_path / "two.pt"),
                       gpu_ids=[], nprocs=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert sorted(one.pop("paths")) == two.pop("paths")
    assert one.keys() == two.keys()
    for k in one:
        scale = one[k].abs().max().clamp(min=1e-12)
        assert (one[k] - two[k]).abs().max() <= 1e-9 * scale + 1e-12, k


def test_rng_state_is_kept_only_for_blocks_that_draw_random_numbers(monkeypatch):
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 4))
    x = torch.randn(8, 16, requires_grad=True)

    def grads(fn):
        torch.manual_seed(1)
        block.zero_grad()
        x.grad = None
        fn(x).square().sum().backward()
        return [t.grad.clone() for t in (x, *block.parameters())]

    plain = grads(block)
    checkpointing.checkpoint_module(block)
    # the recompute draws the forward's dropout mask again, so the gradients are the same
    checkpointed = grads(block)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    kept = []
    original = checkpointing.checkpoint

    def recording(*a, **k):
        kept.append(k["preserve_rng_state"])
        return original(*a, **k)
    monkeypatch.setattr(checkpointing, "checkpoint", recording)
    grads(block)
    deterministic = torch.nn.Sequential(torch.nn.Linear(16, 4))
    checkpointing.checkpoint_module(deterministic)
    deterministic(x).sum().backward()
    assert kept == [True, False]


def test_flop_counter_runs_through_the_replayed_layers(tmp_path):
    # scripts/benchmark.py counts a step's FLOPs with FlopCounterMode, whose module hooks
    # refuse leaf inputs inside a backward's autograd.grad (the replayed layers' recompute)
    from scripts.benchmark import step_flops

    flops = {}
    for on in (False, True):
        opt, model, trainer, batch = _build(ARGS + ["--crop_size", "64", "--load_size", "64"], tmp_path, on)
        try:
            flops[on] = step_flops(lambda: trainer.run_generator_one_step(batch))
        finally:
            distributed.cleanup()
    # the recompute adds at most one more forward, and a backward costs at least a forward
    # (every layer computes its weight gradient)
    assert flops[False] < flops[True] <= flops[False] * 1.5, flops


def test_a_replayed_output_changed_in_place_is_refused(tmp_path):
    # the block's recompute hands back the SPADE output kept from the forward: if something
    # changed it in place since, the recompute would be wrong, so it stops with an error
    opt, model, trainer, batch = _build(ARGS + ["--crop_size", "64", "--load_size", "64"], tmp_path, True)
    try:
        semantics, _ = model.preprocess_input(batch)
        model.netG.head_0.norm_0.register_forward_hook(lambda module, args, out: out.mul_(1))
        loss = model.netG(semantics).square().mean()
        with pytest.raises(RuntimeError, match="modified in place after the forward"):
            loss.backward()
    finally:
        distributed.cleanup()
