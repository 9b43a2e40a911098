"""--spade_impl fast computes the same function as the plain conv path: outputs and parameter
gradients agree to float64 rounding for every norm type, with and without instance edges,
continuous (depth) channels, dontcare labels, odd sizes and the VAE."""
from __future__ import annotations

import argparse
import copy

import pytest
import torch

from models.networks import fast_spade
from models.networks.fast_spade import LabelCode
from models.networks.generators.spade import AUTO_FAST_MIN_CLASSES, SPADEGenerator, resolve_spade_impl
from models.networks.normalization import SPADE
from models.pix2pix_model import instance_edges, one_hot_labels


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _blocky_labels(n, h, w, classes, block, seed):
    """Label regions of ``block`` px (so region-constant pixels exist), cut to (h, w)."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, classes, (n, 1, h // block + 1, w // block + 1), generator=g)
    return cells.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :h, :w]


def _semantics(n, h, w, label_nc, dontcare, edges, dense, block=8, seed=0):
    classes = label_nc + int(dontcare)
    label = _blocky_labels(n, h, w, classes, block, seed)
    parts = [one_hot_labels(label, classes).double()]
    if edges:
        inst = _blocky_labels(n, h, w, 3, 2 * block, seed + 1)
        parts.append(instance_edges(inst * 100 + label).double())
    if dense:
        g = torch.Generator().manual_seed(seed + 2)
        parts.append(torch.rand(n, dense, h, w, generator=g))
    return torch.cat(parts, 1)


def _max_rel(a, b):
    return ((a - b).abs().max() / a.abs().max().clamp(min=1e-30)).item()


def _generator_pair(norm, label_nc, dontcare, extra_nc, crop, aspect, vae):
    opt = argparse.Namespace(
        ngf=4, use_vae=vae, z_dim=8, label_nc=label_nc, contain_dontcare_label=dontcare,
        semantic_nc=label_nc + int(dontcare) + extra_nc, crop_size=crop, aspect_ratio=aspect,
        num_upsampling_layers="normal", norm_G=norm, output_nc=3, spade_impl="conv")
    torch.manual_seed(0)
    conv = SPADEGenerator(opt)
    fast = copy.deepcopy(conv)
    fast.spade_impl = "fast"
    return conv, fast


def _forward_backward(net, semantics, z):
    net.train()
    semantics = semantics.clone().requires_grad_(True)
    torch.manual_seed(1)
    out = net(semantics, z=z)
    # a fixed, position-dependent weighting so every output pixel's gradient matters
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    return out.detach(), grads, semantics.grad


CASES = {
    "syncbatch_edges": dict(norm="spectralspadesyncbatch3x3", edges=True),
    "instance_edges": dict(norm="spectralspadeinstance3x3", edges=True),
    "batch_no_edges": dict(norm="spadebatch3x3", edges=False),
    "instance_5x5": dict(norm="spadeinstance5x5", edges=True),
    "depth_channel": dict(norm="spectralspadesyncbatch3x3", edges=True, dense=1),
    "dontcare_vae_wide": dict(norm="spectralspadeinstance3x3", edges=True, dontcare=True, vae=True,
                              crop=96, aspect=1.5),
}


@pytest.mark.parametrize("case", CASES)
def test_generator_outputs_and_gradients_match_plain_path(case):
    c = {"dense": 0, "dontcare": False, "vae": False, "crop": 64, "aspect": 1.0, **CASES[case]}
    label_nc = 7
    h = round(c["crop"] / c["aspect"])
    conv, fast = _generator_pair(c["norm"], label_nc, c["dontcare"], int(c["edges"]) + c["dense"],
                                 c["crop"], c["aspect"], c["vae"])
    semantics = _semantics(2, h, c["crop"], label_nc, c["dontcare"], c["edges"], c["dense"])
    z = torch.randn(2, 8) if c["vae"] else None
    out_c, grads_c, sem_grad_c = _forward_backward(conv, semantics, z)
    out_f, grads_f, sem_grad_f = _forward_backward(fast, semantics, z)
    assert out_c.shape == out_f.shape == (2, 3, h, c["crop"])
    assert (out_c - out_f).abs().max() < 1e-10
    assert grads_c.keys() == grads_f.keys()
    # Biases right before a norm have (mathematically) zero gradient: compare them against the
    # largest gradient of the network instead of their own rounding-level size.
    floor = 1e-6 * max(g.abs().max() for g in grads_c.values())
    for k in grads_c:
        err = (grads_c[k] - grads_f[k]).abs().max() / torch.maximum(grads_c[k].abs().max(), floor)
        assert err < 1e-8, (k, float(err))
    if c["dense"]:  # the depth map receives the same gradient (UDGAN trains its depth generator so)
        dense_c, dense_f = sem_grad_c[:, -c["dense"]:], sem_grad_f[:, -c["dense"]:]
        assert dense_c.abs().max() > 0
        assert _max_rel(dense_c, dense_f) < 1e-8


@pytest.mark.parametrize("size, seg_size", [((13, 11), (29, 23)), ((7, 9), (7, 9)), ((32, 24), (64, 48))])
@pytest.mark.parametrize("ks", [3, 5])
def test_spade_layer_at_odd_sizes(size, seg_size, ks):
    torch.manual_seed(0)
    layer = SPADE(f"spadeinstance{ks}x{ks}", norm_nc=6, label_nc=5 + 1)
    semantics = _semantics(2, *seg_size, label_nc=4, dontcare=True, edges=True, dense=0, block=5)
    x = torch.randn(2, 6, *size, requires_grad=True)
    outs = []
    for seg in (semantics, LabelCode(semantics, onehot_nc=5)):
        layer.zero_grad()
        x.grad = None
        y = layer(x, seg)
        (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
        outs.append((y.detach(), x.grad.clone(), {k: p.grad.clone() for k, p in layer.named_parameters()}))
    (y_c, gx_c, gp_c), (y_f, gx_f, gp_f) = outs
    assert _max_rel(y_c, y_f) < 1e-10
    assert _max_rel(gx_c, gx_f) < 1e-10
    for k in gp_c:
        assert _max_rel(gp_c[k], gp_f[k]) < 1e-9, k


def test_region_constant_shortcut_is_used_and_exact(monkeypatch):
    """At 64 px with 16 px label regions most pixels take their class constant; the result must
    equal both the plain path and the fast path with the shortcut switched off."""
    semantics = _semantics(1, 64, 64, label_nc=6, dontcare=False, edges=False, dense=0, block=16)
    code = LabelCode(semantics, onehot_nc=6)
    positions = code.boundary((64, 64), 3)
    assert positions is not None and 0 < positions.numel() < 0.5 * 64 * 64
    torch.manual_seed(0)
    layer = SPADE("spadebatch3x3", norm_nc=4, label_nc=6)
    x = torch.randn(1, 4, 64, 64)
    plain = layer(x, semantics)
    shortcut = layer(x, code)
    dense = layer(x, LabelCode(semantics, onehot_nc=6, region_constant=False))
    assert _max_rel(plain, shortcut) < 1e-10 and _max_rel(plain, dense) < 1e-10
    # chunked boundary gather: a chunk smaller than one pixel row changes nothing
    monkeypatch.setattr(fast_spade, "BOUNDARY_CHUNK_ELEMENTS", 100)
    assert _max_rel(plain, layer(x, LabelCode(semantics, onehot_nc=6))) < 1e-10


def _layer_results(layer, x, segs):
    """Output, input gradient and parameter gradients of ``layer`` for each of ``segs``."""
    results = []
    for seg in segs:
        layer.zero_grad()
        xi = x.detach().clone().requires_grad_(True)
        y = layer(xi, seg)
        (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
        results.append([y.detach(), xi.grad] + [p.grad.clone() for p in layer.parameters()])
    return results


@pytest.mark.parametrize("binary_nc", [0, 1, 2])
def test_distinct_windows_are_computed_once_and_exactly(binary_nc):
    """Labels plus 0/1 channels (instance edges) fold into one id: each distinct label window is
    computed once (far fewer than the pixels), and the layer equals the plain conv path."""
    label_nc, h, w = 5, 40, 48
    semantics = _semantics(2, h, w, label_nc, dontcare=False, edges=False, dense=0, block=8)
    for e in range(binary_nc):  # vertical / horizontal stripes of ones
        stripes = torch.zeros(2, 1, h, w)
        if e == 0:
            stripes[..., ::7] = 1
        else:
            stripes[:, :, ::5] = 1
        semantics = torch.cat([semantics, stripes], 1)
    code = LabelCode(semantics, onehot_nc=label_nc)
    found = code.patches((h, w), 3)
    assert found is not None
    pixel_ids, patch_rows, arrangements = found
    assert pixel_ids.shape == (2 * h * w,) and arrangements.size(0) < 0.6 * pixel_ids.numel()
    assert int(pixel_ids.max()) == arrangements.size(0) - 1
    assert int(arrangements.max()) == patch_rows.size(0)  # "outside the image" is used at the border
    torch.manual_seed(0)
    layer = SPADE("spadebatch3x3", norm_nc=4, label_nc=label_nc + binary_nc)
    x = torch.randn(2, 4, h, w)
    plain, fast = _layer_results(layer, x, (semantics, code))
    for a, b in zip(plain, fast):
        assert _max_rel(a, b) < 1e-10


def test_windows_fall_back_for_continuous_channels_and_noise():
    """A depth-like channel cannot be folded into ids, and per-pixel noise labels have no
    repeats: both take the per-pixel lookup path, still exact."""
    depth = _semantics(1, 32, 32, label_nc=4, dontcare=False, edges=False, dense=1, block=8)
    assert LabelCode(depth, onehot_nc=4).patches((32, 32), 3) is None
    noise = _semantics(1, 32, 32, label_nc=30, dontcare=False, edges=False, dense=0, block=1)
    assert LabelCode(noise, onehot_nc=30).patches((32, 32), 3) is None
    torch.manual_seed(0)
    for semantics, onehot_nc in ((depth, 4), (noise, 30)):
        layer = SPADE("spadeinstance3x3", norm_nc=3, label_nc=semantics.size(1))
        x = torch.randn(1, 3, 32, 32)
        plain, fast = _layer_results(layer, x, (semantics, LabelCode(semantics, onehot_nc)))
        for a, b in zip(plain, fast):
            assert _max_rel(a, b) < 1e-10


@pytest.mark.parametrize("bound", [3, 1000, 1 << 30])
def test_tuple_ids_number_each_distinct_tuple_once(bound):
    """Packed keys stay exact when three parts do not fit in 63 bits (they are made dense
    between parts then): equal tuples share an id, different tuples never do."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, bound, (50, 3), generator=g)
    tuples = base[torch.randint(0, 50, (400,), generator=g)]  # many repeats
    ids, count = fast_spade._tuple_ids([tuples[:, 0], tuples[:, 1], tuples[:, 2]], bound)
    expected = {}
    for t, i in zip(map(tuple, tuples.tolist()), ids.tolist()):
        assert expected.setdefault(t, i) == i
    assert count == len(expected) == len(set(expected.values()))
    assert sorted(expected.values()) == list(range(count))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_layer_matches_in_both_memory_layouts(channels_last):
    """Batch of 2 with region constants: the fast path writes its modulation NCHW per sample or
    NHWC to match x; values and gradients are the same either way."""
    semantics = _semantics(2, 64, 64, label_nc=6, dontcare=False, edges=True, dense=0, block=16)
    assert LabelCode(semantics, onehot_nc=6).boundary((64, 64), 3) is not None
    torch.manual_seed(0)
    layer = SPADE("spadeinstance3x3", norm_nc=4, label_nc=7)
    x = torch.randn(2, 4, 64, 64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for seg in (semantics, LabelCode(semantics, onehot_nc=6)):
        layer.zero_grad()
        xi = x.detach().clone().requires_grad_(True)
        y = layer(xi, seg)
        (y * torch.linspace(0, 1, y.numel()).view(y.shape)).sum().backward()
        results.append((y.detach(), xi.grad, layer.mlp_gamma.weight.grad.clone(),
                        layer.mlp_shared[0].weight.grad.clone()))
    for plain, fast in zip(*results):
        assert _max_rel(plain, fast) < 1e-9


def test_pixels_without_class_match_plain_zero_onehot():
    """A pixel with an all-zero one-hot (e.g. an id mapped to nothing) is "no class" in both paths."""
    semantics = _semantics(1, 16, 16, label_nc=3, dontcare=False, edges=True, dense=0, block=4)
    semantics[:, :3, 5:9, 2:7] = 0
    torch.manual_seed(0)
    layer = SPADE("spadeinstance3x3", norm_nc=4, label_nc=4)
    x = torch.randn(1, 4, 16, 16)
    assert _max_rel(layer(x, semantics), layer(x, LabelCode(semantics, onehot_nc=3))) < 1e-10


def test_checkpoints_are_interchangeable():
    conv, fast = _generator_pair("spectralspadesyncbatch3x3", 5, False, 1, 64, 1.0, False)
    fast.load_state_dict(conv.state_dict())  # strict: the same names and shapes
    assert conv.state_dict().keys() == fast.state_dict().keys()


def test_bf16_autocast_fast_path_is_as_accurate_as_plain():
    """Under CPU bf16 autocast both paths round alike: the fast one is no further from the
    float32 result than the plain one."""
    torch.set_default_dtype(torch.float32)
    conv, fast = _generator_pair("spectralspadeinstance3x3", 7, False, 1, 64, 1.0, False)
    semantics = _semantics(2, 64, 64, 7, False, True, 0).float()
    conv.eval()
    with torch.no_grad():
        reference = conv(semantics)
    errors = []
    for net in (conv, fast):
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(semantics)
        assert out.dtype == torch.bfloat16 or out.dtype == torch.float32
        errors.append((out.float() - reference).abs().mean().item())
    assert 0 < errors[0] < 0.1
    assert errors[1] < 2 * errors[0]


def test_auto_picks_fast_for_many_classes_or_no_continuous_channel_and_conv_for_images():
    assert resolve_spade_impl("auto", AUTO_FAST_MIN_CLASSES, 1) == "fast"
    assert resolve_spade_impl("auto", AUTO_FAST_MIN_CLASSES - 1, 1) == "conv"  # a depth channel
    assert resolve_spade_impl("auto", 12, 0) == "fast"  # labels (+ 0/1 instance edges) only
    assert resolve_spade_impl("fast", 12) == "fast" and resolve_spade_impl("conv", 184) == "conv"
    assert resolve_spade_impl("fast", 0) == "conv"  # --label_nc 0: an RGB input has no classes


def test_auto_takes_conv_on_a_gpu_and_an_explicit_choice_stays():
    for onehot_nc, continuous_nc in ((184, 0), (12, 0), (AUTO_FAST_MIN_CLASSES, 1)):
        assert resolve_spade_impl("auto", onehot_nc, continuous_nc, "cpu") == "fast"
        assert resolve_spade_impl("auto", onehot_nc, continuous_nc, "cuda") == "conv"
    assert resolve_spade_impl("fast", 12, 0, "cuda") == "fast"
    assert resolve_spade_impl("conv", 184, 0, "cpu") == "conv"


@pytest.mark.parametrize("no_instance, depth, expected", [(False, 0, "fast"), (True, 0, "fast"),
                                                          (False, 1, "conv")])
def test_generator_counts_instance_edges_as_labels_not_continuous(no_instance, depth, expected):
    """12 classes: instance edges fold into the ids, so 'auto' takes the fast path; a depth
    channel next to them (depthspade's conditioning) keeps the conv path."""
    opt = argparse.Namespace(ngf=4, use_vae=False, z_dim=8, label_nc=12, contain_dontcare_label=False,
                             no_instance=no_instance, semantic_nc=12 + int(not no_instance),
                             crop_size=64, aspect_ratio=1.0, num_upsampling_layers="normal",
                             norm_G="spadeinstance3x3", output_nc=3, spade_impl="auto")

    class WithDepth(SPADEGenerator):
        @staticmethod
        def conditioning_nc(opt):
            return opt.semantic_nc + depth

    net = WithDepth(opt)
    assert net.spade_impl == "auto"  # settled per call, by the input's device
    assert net.impl_on(torch.device("cpu")) == expected
    assert net.impl_on(torch.device("cuda", 0)) == "conv"


def test_forward_takes_the_path_that_impl_on_names_for_the_input_device(monkeypatch):
    """'auto' is settled in forward by the input's device: on the CPU the label code is built
    (fast path); where impl_on says 'conv' (as on a GPU) it is not."""
    from models.networks.generators import spade as spade_module

    opt = argparse.Namespace(ngf=4, use_vae=False, z_dim=8, label_nc=12, contain_dontcare_label=False,
                             no_instance=True, semantic_nc=12, crop_size=64, aspect_ratio=1.0,
                             num_upsampling_layers="normal", norm_G="spadeinstance3x3", output_nc=3,
                             spade_impl="auto")
    net = SPADEGenerator(opt).eval()
    built = []
    real = spade_module._label_code
    monkeypatch.setattr(spade_module, "_label_code", lambda s, n: built.append(n) or real(s, n))
    labels = torch.nn.functional.one_hot(torch.randint(0, 12, (1, 64, 64)), 12).permute(0, 3, 1, 2)
    labels = labels.to(torch.get_default_dtype())  # this module computes in float64
    with torch.no_grad():
        net(labels)
        assert built == [12]
        monkeypatch.setattr(SPADEGenerator, "impl_on", lambda self, device: "conv")
        net(labels)
    assert built == [12]


def test_importing_the_networks_does_not_load_dynamo():
    """Dynamo (~2 s of start-up) is loaded only by --compile, not by the fast path's marks."""
    import subprocess
    import sys
    code = "import sys, models.networks, models.pix2pix_model; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fast_path_stays_eager_and_equal_under_compile():
    from util import performance
    conv, fast = _generator_pair("spectralspadesyncbatch3x3", 6, False, 1, 32, 1.0, False)
    fast.eval()
    semantics = _semantics(1, 32, 32, 6, False, True, 0)
    expected = fast(semantics)
    compiled = performance.maybe_compile(fast, argparse.Namespace(compile=True, compile_backend="eager"))
    assert compiled is not fast
    # the marked functions were swapped for Dynamo-disabled ones before compiling
    assert hasattr(SPADE._modulate_fast, "__wrapped__")
    torch.testing.assert_close(compiled(semantics), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n,classes,dense", [(1, 184, 1), (3, 12, 0), (2, 600, 2)])
def test_class_indices_equal_argmax_with_no_class_pixels(n, classes, dense):
    from models.networks.fast_spade import class_indices
    torch.manual_seed(0)
    label = torch.randint(0, classes + 1, (n, 1, 24, 20))  # id `classes`: no channel set
    semantics = torch.zeros(n, classes + 1 + dense, 24, 20).scatter_(1, label, 1.0)
    semantics[:, classes] = 0
    semantics[:, classes + 1:] = torch.rand(n, dense, 24, 20)  # continuous channels after the one-hot
    onehot = semantics[:, :classes]
    expected = torch.where(onehot.amax(1) > 0, onehot.argmax(1), torch.full_like(label[:, 0], classes))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 cannot hold ids above 256 exactly
        got = class_indices(semantics, classes)
    assert got.dtype == torch.int64 and torch.equal(got, expected)
    assert torch.equal(got, label[:, 0])


def test_a_map_that_is_not_one_hot_is_refused_by_name():
    """Soft or overlapping labels cannot be looked up: one clear error naming the fix."""
    torch.manual_seed(0)
    semantics = torch.zeros(1, 4, 8, 8)
    semantics[:, 1] = 1
    semantics[:, 3, :4] = 1  # two classes at the same pixels: their codes sum past the last class
    with pytest.raises(ValueError, match="not one-hot.*--spade_impl conv"):
        LabelCode(semantics, onehot_nc=4)
