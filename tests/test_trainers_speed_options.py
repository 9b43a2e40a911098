"""Speed options of the trainer: gradient accumulation (--accum_iter), frozen discriminator
weights during the G step, channels_last and torch.compile."""
from __future__ import annotations

import pytest
import torch

import test as test_script
from options.train_options import TrainOptions
from trainers.train_loop import TrainingRun
from util import checkpoint, distributed
from util.errors import OptionError

# No spectral norm (its power iteration advances once per forward, so two micro-batches would
# see a slightly different weight than one batch) and instance norms (per-sample statistics).
EXACT = ["--crop_size", "64", "--load_size", "64", "--norm_G", "spadeinstance3x3", "--norm_D", "instance",
         "--num_D", "1", "--no_flip", "--no_html", "--serial_batches"]


def _run(args, train=True):
    opt = TrainOptions().parse(args)
    distributed.setup(opt.gpu_ids)
    try:
        run = TrainingRun(opt)
        if train:
            run.run()
        return run
    finally:
        distributed.cleanup()


def _grads(nets, d_side):
    return {f"{s}.{k}": p.grad.clone() for s, net in nets.items() if s.startswith("D") == d_side
            for k, p in net.named_parameters() if p.grad is not None}


def test_two_micro_batches_give_the_gradient_of_one_batch(tiny_train_args):
    run = _run(tiny_train_args + EXACT, train=False)
    batch = next(iter(run.loader))
    assert batch["label"].size(0) == 2
    halves = [{k: v[i:i + 1] if torch.is_tensor(v) else v[i:i + 1] for k, v in batch.items()} for i in (0, 1)]
    trainer, nets = run.trainer, run.trainer.networks()
    results = []
    for data in (batch, halves):
        torch.manual_seed(0)
        trainer.optimizer_D.zero_grad(set_to_none=True)
        trainer.generator_backward(data)
        g = _grads(nets, d_side=False)
        assert not _grads(nets, d_side=True)  # D's weights were frozen during the G step
        trainer.discriminator_backward(data)
        results.append((g, _grads(nets, d_side=True), dict(trainer.g_losses)))
    (g1, d1, l1), (g2, d2, l2) = results
    assert g1.keys() == g2.keys() and d1.keys() == d2.keys() and len(g1) > 10
    for one, two in ((g1, g2), (d1, d2)):
        for k in one:
            assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-7), k
    for k in l1:  # logged losses: the mean over micro-batches
        assert float(l1[k]) == pytest.approx(float(l2[k]), rel=1e-5)
    # and all discriminator weights are trainable again for the D step
    assert all(p.requires_grad for s, n in nets.items() if s.startswith("D") for p in n.parameters())


def test_each_step_frees_the_other_sides_gradients(tiny_train_args):
    """G's gradients are gone during the D step and D's during the G step (memory), while each
    step's own gradients are there after it."""
    run = _run(tiny_train_args + EXACT, train=False)
    batch = next(iter(run.loader))
    trainer, nets = run.trainer, run.trainer.networks()
    for _ in range(2):
        trainer.run_generator_one_step(batch)
        assert _grads(nets, d_side=False) and not _grads(nets, d_side=True)
        trainer.run_discriminator_one_step(batch)
        assert _grads(nets, d_side=True) and not _grads(nets, d_side=False)


def test_accum_iter_counts_samples_and_uses_a_short_last_group(tmp_path, tiny_train_args):
    """5 samples, batch 1, accumulate 2: optimizer steps over 2, 2 and 1 samples."""
    args = tiny_train_args + ["--batchSize", "1", "--synthetic_num", "5", "--accum_iter", "2",
                              "--crop_size", "64", "--load_size", "64", "--norm_G", "spectralspadeinstance3x3"]
    steps = []
    original = TrainingRun.run

    run = _run(args, train=False)
    optimizer_step = run.trainer.optimizer_G.step

    def counting_step(*a, **k):
        steps.append(run.counter.total_steps)
        return optimizer_step(*a, **k)
    run.trainer.optimizer_G.step = counting_step
    distributed.setup([])
    try:
        original(run)
    finally:
        distributed.cleanup()
    assert steps == [0, 2, 4]  # counter before each of the three optimizer steps
    assert run.counter.total_steps == 5
    state = checkpoint.load_train_state(str(tmp_path / "checkpoints" / "tiny"), "latest")
    assert state["step"] == 5


def test_accum_iter_must_be_positive(tiny_train_args):
    with pytest.raises(OptionError, match="--accum_iter"):
        TrainOptions().parse(tiny_train_args + ["--accum_iter", "0"])


def test_channels_last_and_compile_train_save_plain_checkpoints_and_test(tmp_path, tiny_train_args):
    """channels_last weights/activations and a torch.compile wrapper (the 'eager' backend: Dynamo's
    tracing around the fast SPADE path, the wrapping, unwrapping and checkpoint path without a C++
    compiler) train, save checkpoints with the plain names, and test.py loads them."""
    run = _run(tiny_train_args + ["--channels_last", "--compile", "--compile_backend", "eager",
                                  "--spade_impl", "fast"])
    netG = run.model.netG
    assert hasattr(netG, "_orig_mod")  # compiled
    plain = distributed.unwrap(netG)
    conv = plain.conv_img
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())
    folder = tmp_path / "checkpoints" / "tiny"
    saved = torch.load(folder / "latest_net_G.pth", weights_only=False)
    keys = list(saved["state_dict"] if "state_dict" in saved else saved)
    assert keys and not any("_orig_mod" in k or k.startswith("module.") for k in keys)
    results = tmp_path / "results"
    test_script.main(["--gpu_ids", "-1", "--dataset_mode", "synthetic", "--crop_size", "32", "--load_size", "32",
                      "--ngf", "4", "--synthetic_num", "2", "--num_upsampling_layers", "normal",
                      "--checkpoints_dir", str(tmp_path / "checkpoints"), "--name", "tiny",
                      "--results_dir", str(results), "--channels_last"])
    assert len(list(results.rglob("synthesized_image/*.png"))) == 2


def test_channels_last_matches_contiguous_output(tiny_train_args):
    from models import MODELS
    opt = TrainOptions().parse(tiny_train_args, save=False)
    torch.manual_seed(0)
    model = MODELS.get(opt.model)(opt).eval()
    run = _run(tiny_train_args, train=False)
    batch = next(iter(run.loader))
    with torch.no_grad():
        torch.manual_seed(1)
        plain = model.inference(batch)
        model.netG.to(memory_format=torch.channels_last)
        torch.manual_seed(1)
        nhwc = model.inference(batch)
    assert (plain - nhwc).abs().max() < 1e-4
