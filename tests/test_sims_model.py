"""SIMS (``--model sims``): simulated training canvases, the synthesis network, training through
train.main, synthesis from a segment bank with test.py, and the depth that orders the canvas."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import test as test_script
import train
from conftest import TINY_TRAIN
from helpers import network_opt
from models.networks.generators.sims_unet import SIMSGenerator, effective_num_downs
from models.sims.simulate import SimulationConfig, component_map, simulate_canvas
from util import checkpoint, distributed
from util.errors import CheckpointError, DatasetError, OptionError

SIZE = 64
# TINY_TRAIN at 64 px with SIMS's network, one discriminator scale (no SPADE-only options)
SIMS_TRAIN = TINY_TRAIN[:TINY_TRAIN.index("--num_upsampling_layers")] + ["--model", "sims", "--num_D", "1"]
SIMS_TRAIN[SIMS_TRAIN.index("--crop_size") + 1] = str(SIZE)
SIMS_TRAIN[SIMS_TRAIN.index("--load_size") + 1] = str(SIZE)
SIMS_TRAIN[SIMS_TRAIN.index("--synthetic_num") + 1] = "6"


# ---------------------------------------------------------------------- simulated canvases
def _layout() -> np.ndarray:
    """(32, 32) labels: class 0 left, class 1 right, a class-2 square and two separate class-3
    squares (one class, two components), a dontcare (255) strip at the top."""
    label = np.zeros((32, 32), dtype=np.int64)
    label[:, 16:] = 1
    label[10:20, 4:12] = 2
    label[4:9, 20:26] = 3
    label[22:28, 20:26] = 3
    label[:2, :] = 255
    return label


def _boundary_band(ids: np.ndarray, radius: int) -> np.ndarray:
    """Pixels with another component (or an ignored pixel) within ``radius`` (chessboard)."""
    size = 2 * radius + 1
    padded_hi = ndimage.maximum_filter(ids, size=size, mode="nearest")
    padded_lo = ndimage.minimum_filter(ids, size=size, mode="nearest")
    return padded_hi != padded_lo


def test_component_map_splits_classes_into_connected_parts():
    ids, class_of = component_map(_layout(), ignore_ids=(255,))
    assert sorted(class_of.tolist()) == [0, 1, 2, 3, 3]
    assert (ids[:2] == -1).all() and (ids[2:] >= 0).all()
    assert ids[5, 22] != ids[24, 22] and class_of[ids[5, 22]] == class_of[ids[24, 22]] == 3


def test_erosion_only_makes_boundary_holes_and_keeps_pixels():
    label = _layout()
    image = torch.rand(3, 32, 32) * 2 - 1
    for radius in (1, 2):
        cfg = SimulationConfig(drop_prob=0.0, min_erosion=radius, max_erosion=radius, color_jitter=0.0)
        canvas, filled = simulate_canvas(image, label, torch.Generator().manual_seed(0), cfg)
        assert canvas.shape == (3, 32, 32) and filled.shape == (1, 32, 32)
        ids, _ = component_map(label)
        # holes: exactly the pixels within `radius` of another component or of dontcare;
        # the image border is no boundary
        expected_hole = _boundary_band(ids, radius) | (ids < 0)
        assert torch.equal(filled[0].bool(), torch.from_numpy(~expected_hole))
        keep = filled.bool().expand(3, -1, -1)
        assert torch.equal(canvas[keep], image[keep])  # no colour transfer: the photo's pixels
        assert (canvas[~keep] == 0).all()


def test_dropped_segments_are_entire_holes_and_seeds_repeat():
    label = _layout()
    image = torch.rand(3, 32, 32) * 2 - 1
    ids, class_of = component_map(label)
    cfg = SimulationConfig(drop_prob=0.5, min_erosion=1, max_erosion=1, color_jitter=0.0)
    interior = ~_boundary_band(ids, 1) & (ids >= 0)
    seen_drop = seen_keep = False
    for seed in range(8):
        canvas, filled = simulate_canvas(image, label, torch.Generator().manual_seed(seed), cfg)
        f = filled[0].numpy().astype(bool)
        for k in range(len(class_of)):
            inside = interior & (ids == k)
            # a component is all hole (dropped) or its whole eroded interior is kept
            assert f[inside].all() or not f[ids == k].any(), (seed, k)
            seen_drop |= not f[ids == k].any()
            seen_keep |= bool(f[inside].all())
        again = simulate_canvas(image, label, torch.Generator().manual_seed(seed), cfg)
        assert torch.equal(again[0], canvas) and torch.equal(again[1], filled)
    assert seen_drop and seen_keep
    all_dropped = simulate_canvas(image, label, None, SimulationConfig(drop_prob=1.0))
    assert all_dropped[1].sum() == 0 and all_dropped[0].abs().sum() == 0


def test_colour_transfer_is_one_affine_map_per_segment():
    label = _layout()
    image = torch.rand(3, 32, 32) - 0.5  # away from the clamp at +-1
    cfg = SimulationConfig(drop_prob=0.0, min_erosion=0, max_erosion=0, color_jitter=0.3)
    canvas, filled = simulate_canvas(image, label, torch.Generator().manual_seed(3), cfg)
    ids, class_of = component_map(label)
    assert torch.equal(filled[0].bool(), torch.from_numpy(ids >= 0))  # no erosion, no drops
    changed = 0
    for k in range(len(class_of)):
        m = torch.from_numpy(ids == k)
        x, y = image[:, m], canvas[:, m]  # (3, P)
        for c in range(3):  # y = a * x + b exactly, one (a, b) per segment and channel
            a_mat = torch.stack([x[c], torch.ones_like(x[c])], dim=1).double()
            sol = torch.linalg.lstsq(a_mat, y[c].double()[:, None]).solution
            assert (a_mat @ sol - y[c].double()[:, None]).abs().max() < 1e-5
        changed += int((x - y).abs().max() > 1e-3)
    assert changed == len(class_of)


def test_bad_simulation_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="drop_prob"):
        SimulationConfig(drop_prob=1.5)
    with pytest.raises(ValueError, match="differ in size"):
        simulate_canvas(torch.zeros(3, 8, 8), np.zeros((4, 4), dtype=np.int64))


# ---------------------------------------------------------------------- the network
def test_generator_shapes_depth_cap_and_canvas_dependence():
    opt = network_opt(netG="sims_unet", model="sims", ngf=4, crop_size=SIZE, semantic_nc=5, sims_num_downs=5)
    assert effective_num_downs(opt) == 4  # 64 px: a 4 px bottleneck
    assert effective_num_downs(network_opt(crop_size=32, sims_num_downs=5)) == 3
    assert effective_num_downs(network_opt(crop_size=SIZE, sims_num_downs=2)) == 2
    SIMSGenerator.check_options(opt)
    net = SIMSGenerator(opt)
    net.init_weights("xavier", 0.02)
    semantics = torch.zeros(2, 5, SIZE, SIZE).scatter_(1, torch.randint(0, 5, (2, 1, SIZE, SIZE)), 1.0)
    canvas, filled = torch.rand(2, 3, SIZE, SIZE) * 2 - 1, torch.ones(2, 1, SIZE, SIZE)
    out = net(semantics, canvas, filled)
    assert out.shape == (2, 3, SIZE, SIZE) and out.abs().max() <= 1
    assert (net(semantics, torch.zeros_like(canvas), filled) - out).abs().max() > 0
    with pytest.raises(OptionError, match="--model sims"):
        SIMSGenerator.check_options(network_opt(netG="sims_unet", model="pix2pix"))


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A segment bank of the training split, then one tiny --model sims run (train.main) with the
    paper's defaults (its training canvases are stencilled through the bank's segments)."""
    root = tmp_path_factory.mktemp("sims")
    ckpt = root / "checkpoints"
    bank_dir = ckpt / "tiny" / "segment_bank"
    from scripts.build_segment_bank import main as build_bank
    build_bank(["--dataset_mode", "synthetic", "--crop_size", str(SIZE), "--load_size", str(SIZE),
                "--synthetic_num", "6", "--bank_dir", str(bank_dir), "--gpu_ids", "-1"])
    train.main(SIMS_TRAIN + ["--checkpoints_dir", str(ckpt), "--name", "tiny"])
    return root


def _test_opt(root: Path, *extra: str):
    from options.test_options import TestOptions
    return TestOptions().parse(["--gpu_ids", "-1", "--checkpoints_dir", str(root / "checkpoints"),
                                "--name", "tiny", "--load_from_opt_file", "--how_many", "3",
                                "--synthetic_num", "3", "--no_stn", *extra])


def test_training_step_writes_framework_checkpoints_and_losses(trained):
    folder = trained / "checkpoints" / "tiny"
    for short in ("G", "D"):
        assert (folder / f"latest_net_{short}.pth").is_file()
    log = (folder / "loss_log.txt").read_text()
    # the paper's objective: class-masked VGG (its pixel term with --no_vgg_loss) + semantic CE, no GAN
    assert "MaskedVGG" in log and "Semantic" in log and "GAN" not in log and " L1" not in log
    blob = torch.load(folder / "latest_net_G.pth", weights_only=True)
    assert blob["options"]["netG"] == "crn" and blob["options"]["model"] == "sims"
    # the training page shows the simulated canvas next to the output
    page = (folder / "web" / "index.html").read_text()
    canvases = list((folder / "web" / "images").glob("*canvas*"))
    assert canvases and all(c.name in page for c in canvases)


def _train_model(root: Path, *extra: str):
    from options.train_options import TrainOptions
    from models.sims_model import SIMSModel
    from data import create_dataset
    opt = TrainOptions().parse(SIMS_TRAIN + ["--checkpoints_dir", str(root / "scratch"), "--name", "m", *extra],
                               save=False)
    model = SIMSModel(opt)
    samples = [create_dataset(opt)[i] for i in range(2)]
    batch = {k: (torch.stack([s[k] for s in samples]) if isinstance(samples[0][k], torch.Tensor)
                 else [s[k] for s in samples]) for k in samples[0]}
    return model, batch


def test_light_objective_without_gan_has_only_reconstruction_losses(trained):
    distributed.setup([])
    try:
        model, batch = _train_model(trained, "--netG", "sims_unet", "--sims_objective", "light",
                                    "--sims_canvas", "light", "--sims_stages", "1", "--no_gan")
        losses, outputs = model.generator_loss(batch)
        assert set(losses) == {"L1"} and outputs["canvas"].shape == (2, 3, SIZE, SIZE)
        assert float(sum(model.discriminator_loss(batch).values()).detach()) == 0.0
    finally:
        distributed.cleanup()


def test_paper_objective_trains_coarse_to_fine(trained):
    """--sims_stages 2 over 2 epochs: epoch 1 at half size, epoch 2 at full size; the losses are
    the paper's; outputs for display come back at the batch's size; --sims_gan adds the GAN."""
    distributed.setup([])
    try:
        model, batch = _train_model(trained, "--sims_stages", "2", "--niter", "2")
        assert model.objective == "paper" and not model.use_gan
        model.set_epoch(1)
        assert model.stage_scale() == 2
        staged = model.stage_batch(batch)
        assert staged["label"].shape[-1] == SIZE // 2 and staged["image"].shape[-1] == SIZE // 2
        assert model.stage_batch(batch) is staged  # G and D steps share the batch (and its canvas)
        losses, outputs = model.generator_loss(batch)
        assert set(losses) == {"MaskedVGG", "Semantic"}
        assert all(torch.isfinite(v) for v in losses.values())
        assert outputs["image"].shape == (2, 3, SIZE, SIZE) and "logits" not in outputs
        sum(losses.values()).backward()
        head = [p for n, p in model.netG.named_parameters() if p.grad is not None]
        assert head  # both heads get gradients
        model.set_epoch(2)
        assert model.stage_scale() == 1 and model.stage_batch(batch) is batch
        gan, _ = _train_model(trained, "--sims_gan")
        assert {"GAN", "GAN_Feat"} <= set(gan.generator_loss(batch)[0])
    finally:
        distributed.cleanup()


@pytest.mark.parametrize("flags, match", [
    (("--no_gan",), "--no_gan belongs to --sims_objective light"),
    (("--netG", "sims_unet", "--sims_objective", "paper"), "needs semantic logits"),
    (("--sims_objective", "light", "--sims_gan"), "--sims_gan belongs to --sims_objective paper"),
    (("--sims_stages", "0"), "--sims_stages must be at least 1"),
    (("--sims_min_area", "1.5"), "--sims_min_area"),
])
def test_bad_objective_options_are_clear_errors(trained, flags, match):
    with pytest.raises(OptionError, match=match):
        _train_model(trained, *flags)


def test_test_py_shows_the_canvas_column(trained):
    results = trained / "results"
    test_script.synthesize(_test_opt(trained, "--results_dir", str(results)))
    folder = results / "tiny" / "test_latest"
    html = (folder / "index.html").read_text()
    assert "canvas" in html
    srcs = re.findall(r'src="([^"]+)"', html)
    assert srcs and all((folder / s).is_file() for s in srcs)
    for kind in ("input_label", "canvas", "synthesized_image", "real_image", "input_depth"):
        assert len(list((folder / "images" / kind).glob("*.png"))) == 3, kind
    canvas = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        sorted((folder / "images" / "canvas").glob("*.png"))[0]))
    assert canvas.std() > 0  # segments were pasted


def test_missing_bank_is_a_clear_error(trained):
    with pytest.raises(OptionError, match="build_segment_bank.py"):
        test_script.synthesize(_test_opt(trained, "--results_dir", str(trained / "r2"),
                                         "--bank_dir", str(trained / "nowhere")))


def _save_depth_generator(path_dir: Path, opt_overrides: dict, ngf_depth: int = 4, weights_ngf: int = 4) -> Path:
    """A tiny UDGAN depth generator file (``latest_net_G_depth.pth``) for the synthetic label space."""
    from models.networks.generators.depthspade import UNetDepthGenerator
    opts = network_opt(label_nc=12, contain_dontcare_label=False, no_instance=False, cond_inputs=[],
                       semantic_nc=13, ngf_depth=weights_ngf, depth_num_down=2, netG_depth="unet",
                       model="udgan", netG="depthspade")
    torch.manual_seed(0)
    net = UNetDepthGenerator(opts)
    saved = network_opt(**{**vars(opts), "ngf_depth": ngf_depth, **opt_overrides})
    checkpoint.save_checkpoint(str(path_dir), "latest", {"G_depth": net}, saved, step=7)
    return path_dir / "latest_net_G_depth.pth"


def test_depth_generator_orders_the_canvas(trained, monkeypatch):
    gdepth = _save_depth_generator(trained / "udgan", {})
    opt = _test_opt(trained, "--sims_depth", "generator", "--sims_depth_checkpoint", str(gdepth),
                    "--results_dir", str(trained / "r3"))
    from models.sims_model import SIMSModel
    import models.sims.canvas as canvas_module
    from data import create_dataset
    distributed.setup([])
    try:
        model = SIMSModel(opt)
        checkpoint.load_networks(model.networks(), str(trained / "checkpoints" / "tiny"), "latest", opt)
        model.eval()
        seen = []
        original = canvas_module.compose_canvas

        def recording(bank, label, depth, **kw):
            seen.append(depth)
            return original(bank, label, depth, **kw)

        monkeypatch.setattr(canvas_module, "compose_canvas", recording)
        ds = create_dataset(opt)
        samples = [ds[i] for i in range(2)]
        batch = {k: (torch.stack([s[k] for s in samples]) if isinstance(samples[0][k], torch.Tensor)
                     else [s[k] for s in samples]) for k in samples[0]}
        batch["has_depth"] = torch.tensor([True, True])
        out = model.synthesize(batch)
        semantics, _ = model.preprocess_input(batch)
        with torch.no_grad():
            expected = model.netG_depth(semantics)
        assert out["depth"].shape == (2, 1, SIZE, SIZE) and torch.allclose(out["depth"], expected)
        assert len(seen) == 2 and all(d is not None for d in seen)
        # the generator's map, not the dataset's, ordered the segments
        assert np.allclose(seen[0], expected[0, 0].numpy())
        assert not np.allclose(seen[0], batch["depth"][0, 0].numpy())
    finally:
        distributed.cleanup()
    # and through test.py: the generated depth is shown
    test_script.synthesize(opt)
    folder = trained / "r3" / "tiny" / "test_latest"
    assert len(list((folder / "images" / "synthesized_depth").glob("*.png"))) == 3


def test_bad_depth_options_and_checkpoints_are_clear_errors(trained):
    with pytest.raises(OptionError, match="--sims_depth_checkpoint"):
        SIMS = __import__("models.sims_model", fromlist=["SIMSModel"]).SIMSModel
        SIMS(_test_opt(trained, "--sims_depth", "generator"))
    SIMS = __import__("models.sims_model", fromlist=["SIMSModel"]).SIMSModel
    with pytest.raises(CheckpointError, match="does not exist"):
        SIMS(_test_opt(trained, "--sims_depth_checkpoint", str(trained / "none.pth")))
    other_labels = _save_depth_generator(trained / "udgan_other", {"label_nc": 20, "semantic_nc": 21})
    with pytest.raises(CheckpointError, match="--label_nc 20"):
        SIMS(_test_opt(trained, "--sims_depth_checkpoint", str(other_labels)))
    # options saved with the file say ngf_depth 8, the weights are ngf 4: strict loading refuses
    torn = _save_depth_generator(trained / "udgan_torn", {}, ngf_depth=8, weights_ngf=4)
    with pytest.raises(CheckpointError, match="G_depth"):
        SIMS(_test_opt(trained, "--sims_depth_checkpoint", str(torn)))
    # the image generator's file is not a depth generator
    with pytest.raises(CheckpointError):
        SIMS(_test_opt(trained, "--sims_depth_checkpoint",
                       str(trained / "checkpoints" / "tiny" / "latest_net_G.pth")))
    with pytest.raises(DatasetError, match="no depth map"):
        model = SIMS(_test_opt(trained, "--sims_depth", "dataset"))
        batch = {"has_depth": torch.tensor([False]), "depth": torch.zeros(1, 1, SIZE, SIZE), "path": ["x"]}
        model.ordering_depth(batch, torch.zeros(1, 13, SIZE, SIZE))


def test_alignment_networks_follow_the_retrieval_unless_no_stn(trained):
    """--sims_retrieval paper reads the bank's frame_stn.pth (the transformation network),
    shape its stn.pth (the mask aligner); a missing one names the command that trains it."""
    import shutil
    bank = trained / "checkpoints" / "tiny" / "segment_bank"
    aligned = trained / "bank_with_stn"
    shutil.copytree(bank, aligned)
    from models.sims.alignment import AffineSTN
    from models.sims.frame_stn import FrameSTN
    from models.sims_model import SIMSModel
    from scripts.train_sims_stn import main as train_stn
    for kind, cls in (("paper", FrameSTN), ("shape", AffineSTN)):
        opt = _test_opt(trained, "--results_dir", str(trained / f"r4_{kind}"), "--sims_retrieval", kind,
                        "--bank_dir", str(aligned))
        opt.no_stn = False
        with pytest.raises(OptionError, match=f"train_sims_stn.py --stn {kind}"):
            SIMSModel(opt).segment_bank()
        common = ["--bank_dir", str(aligned), "--stn", kind, "--steps", "3", "--batch_size", "8"]
        train_stn(common + (["--gpu_ids", "-1", "--eval_pairs", "8"] if kind == "paper" else ["--eval_pairs", "16"]))
        assert isinstance(SIMSModel(opt).segment_bank()[1], cls)
        test_script.synthesize(opt)
        folder = trained / f"r4_{kind}" / "tiny" / "test_latest"
        assert len(list((folder / "images" / "canvas").glob("*.png"))) == 3


def test_runs_saved_with_the_old_generator_name_still_load(trained):
    """Before the paper's CRN, --model sims trained --netG sims (now sims_unet): its opt.json and
    network files name "sims" and must still load at test time."""
    import json
    ckpt = trained / "checkpoints"
    train.main(SIMS_TRAIN + ["--checkpoints_dir", str(ckpt), "--name", "old", "--netG", "sims_unet",
                             "--sims_objective", "light", "--sims_canvas", "light", "--sims_stages", "1",
                             "--niter", "1"])
    folder = ckpt / "old"
    options = json.loads((folder / "opt.json").read_text())
    (folder / "opt.json").write_text(json.dumps({**options, "netG": "sims"}))
    for path in folder.glob("*_net_G.pth"):
        blob = torch.load(path, weights_only=False)
        blob["options"]["netG"] = "sims"
        torch.save(blob, path)
    results = trained / "r_old"
    from options.test_options import TestOptions
    opt = TestOptions().parse(["--gpu_ids", "-1", "--checkpoints_dir", str(ckpt), "--name", "old",
                               "--load_from_opt_file", "--how_many", "2", "--synthetic_num", "2", "--no_stn",
                               "--sims_retrieval", "shape", "--bank_dir", str(ckpt / "tiny" / "segment_bank"),
                               "--results_dir", str(results)])
    assert opt.netG == "sims_unet"
    test_script.synthesize(opt)
    assert len(list((results / "old" / "test_latest" / "images" / "synthesized_image").glob("*.png"))) == 2


def test_ordering_network_orders_the_canvas_when_beside_the_bank(trained, monkeypatch):
    """--sims_order auto takes the bank's order.pth when it exists (no depth needed, none shown);
    network without the file names the command that trains it; classes ignores both."""
    import shutil
    import models.sims.canvas as canvas_module
    from models.sims.ordering_net import OrderingNet
    from models.sims_model import SIMSModel
    bank = trained / "checkpoints" / "tiny" / "segment_bank"
    ordered = trained / "bank_with_order"
    shutil.copytree(bank, ordered)
    with pytest.raises(OptionError, match="train_sims_ordering.py"):
        SIMSModel(_test_opt(trained, "--bank_dir", str(ordered), "--sims_order", "network")).order_network()
    from scripts.train_sims_ordering import main as train_order
    train_order(["--dataset_mode", "synthetic", "--crop_size", str(SIZE), "--load_size", str(SIZE),
                 "--synthetic_num", "6", "--bank_dir", str(ordered), "--gpu_ids", "-1", "--steps", "3",
                 "--order_size", "16", "--order_width", "4"])
    seen = []
    original = canvas_module.compose_canvas

    def recording(bank, label, depth, **kw):
        seen.append((depth, kw.get("order_net")))
        return original(bank, label, depth, **kw)

    monkeypatch.setattr(canvas_module, "compose_canvas", recording)
    results = trained / "r_order"
    test_script.synthesize(_test_opt(trained, "--bank_dir", str(ordered), "--results_dir", str(results)))
    assert len(seen) == 3 and all(d is None and isinstance(net, OrderingNet) for d, net in seen)
    folder = results / "tiny" / "test_latest" / "images"
    assert len(list((folder / "canvas").glob("*.png"))) == 3 and not (folder / "input_depth").exists()
    model = SIMSModel(_test_opt(trained, "--bank_dir", str(ordered), "--sims_order", "classes"))
    assert model.order_network() is None
