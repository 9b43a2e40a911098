"""Exact fast SPADE (``--spade_impl fast``): the same function as the plain conv path, less work.

A SPADE layer computes ``actv = relu(conv_k(segmap))`` then ``gamma, beta = conv_k(actv)``. With a
one-hot label map two facts make most of that work unnecessary:

1. **The first conv is a lookup.** At each pixel the k x k conv over one-hot channels adds one
   weight column per kernel offset: the column of the class found at that offset. So it is a sum
   of k*k rows of a table (``F.embedding_bag``), plus a small dense conv over the few continuous
   channels (instance edges, depth). The table has a zero row for "no class", which is also what
   the zero padding of the plain conv contributes.
2. **Inside a region gamma and beta are constants of the class.** Where every label within
   ``2 * (k // 2)`` pixels is the same class ``c``, no continuous channel is non-zero and the
   window stays inside the image, ``actv`` is the same vector ``a_c`` under the whole second
   kernel, so ``gamma/beta = b + sum_offsets(W) @ a_c``: one small matrix product per class.
   Only the remaining pixels (near label boundaries, edges and the image border) need the
   second conv; they are gathered and multiplied as one matrix.
3. **gamma/beta depend only on the pixel's label patch.** Without continuous channels (or with
   binary ones, SPADE's instance edges, folded into the class id) a pixel's gamma and beta are a
   function of the labels in its (2k - 1) x (2k - 1) window (zero padding included: "no
   class"). Far fewer distinct windows occur than pixels (2-4x fewer than boundary pixels on
   CamVid- and COCO-like maps), so each distinct window is computed once: the first conv once per
   distinct k x k label patch, the second once per distinct k x k arrangement of those, and the
   result is looked up per pixel. This subsumes 2. (a region's pixels share one window) and also
   covers the image border. Maps with continuous channels (depth) keep 1. + 2.

Everything is built from differentiable ops on the layer's own parameters (same names and
shapes as the plain layer), so outputs and parameter gradients agree to float rounding and the
checkpoints are interchangeable. The caller guarantees the one-hot part is exactly one-hot
(``Pix2PixModel.preprocess_input`` builds it so).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Above this share of "boundary" pixels the dense second conv is cheaper than gather + matmul.
REGION_CONSTANT_MAX_BOUNDARY = 0.6
# Boundary pixels are gathered into patch matrices of at most this many elements at a time.
BOUNDARY_CHUNK_ELEMENTS = 1 << 20
# At most this many binary continuous channels (instance edges: 1) are folded into the class id.
MAX_FOLDED_CHANNELS = 2


def class_indices(semantics: torch.Tensor, onehot_nc: int) -> torch.Tensor:
    """``(N, h, w)`` int64: the class of each pixel of the one-hot first ``onehot_nc`` channels,
    ``onehot_nc`` where no channel is set.

    One matrix product per sample, ``[1, 2, ..., onehot_nc] @ onehot``, read in the map's own
    layout: exact for one-hot maps (a single non-zero term, integers far below 2**24, float32
    outside autocast), and several times faster on a CPU than argmax over the channel axis.
    """
    n, _, h, w = semantics.shape
    codes = torch.arange(1, onehot_nc + 1, dtype=torch.float32, device=semantics.device)
    index = semantics.new_empty((n, h * w), dtype=torch.float32)
    with torch.autocast(semantics.device.type, enabled=False):
        for i in range(n):  # each sample's one-hot block is contiguous, the batch's is not
            onehot = semantics[i, :onehot_nc].detach().float().reshape(onehot_nc, h * w)
            torch.mv(onehot.t(), codes, out=index[i])
    index = index.long().view(n, h, w) - 1
    if index.numel() and (int(index.min()) < -1 or int(index.max()) >= onehot_nc):
        raise ValueError(f"--spade_impl fast reads the first {onehot_nc} channels of the label map "
                         "as one-hot classes, but they are not one-hot (values other than 0/1, or "
                         "several classes at a pixel); pass one-hot labels, or use --spade_impl conv")
    return torch.where(index < 0, torch.full_like(index, onehot_nc), index)


class LabelCode:
    """A one-hot label map kept as class indices, plus its continuous channels.

    ``semantics: (N, C, H, W)``: the first ``onehot_nc`` channels one-hot (a pixel may have no
    class: all zeros), the rest continuous (edges, depth). Built once per generator forward;
    resized maps, neighbour indices and region masks are cached per resolution, so the label
    map is resized once per resolution instead of once per SPADE layer.
    """

    def __init__(self, semantics: torch.Tensor, onehot_nc: int, region_constant: bool = True) -> None:
        self.onehot_nc = onehot_nc
        self.region_constant = region_constant
        self.index = class_indices(semantics, onehot_nc)
        self.dense = semantics[:, onehot_nc:] if semantics.size(1) > onehot_nc else None
        self.size = tuple(semantics.shape[2:])
        self._cache: Dict[tuple, object] = {}
        self.folded = self._fold_binary_channels()

    @property
    def dense_nc(self) -> int:
        return 0 if self.dense is None else self.dense.size(1)

    @property
    def num_ids(self) -> int:
        """How many values ``folded`` ids take: (classes + "no class") x binary channel states."""
        return (self.onehot_nc + 1) << self.dense_nc

    def _fold_binary_channels(self) -> Optional[torch.Tensor]:
        """``(N, H, W)`` ids ``class + (onehot_nc + 1) * bits`` (bit e: continuous channel e is 1)
        when every continuous channel is exactly 0 or 1 (instance edges), else None (depth)."""
        if not self.region_constant:  # no shortcut at all: per-pixel lookup + dense conv
            return None
        if self.dense is None:
            return self.index
        if self.dense_nc > MAX_FOLDED_CHANNELS:
            return None
        if not bool(((self.dense == 0) | (self.dense == 1)).all()):
            return None
        bits = sum(self.dense[:, e].detach().long() << e for e in range(self.dense_nc))
        return self.index + (self.onehot_nc + 1) * bits

    def _cached(self, key: tuple, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def at(self, size: Tuple[int, int]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Index map ``(N, h, w)`` int64 and continuous channels ``(N, E, h, w)`` at ``size``,
        resized with the plain path's rule (``F.interpolate`` nearest)."""
        size = tuple(size)

        def make():
            if size == self.size:
                return self.index, self.dense
            # nearest picks the same source pixels for any channel, so resizing the indices as
            # floats (exact below 2**24) equals resizing the one-hot map.
            index = F.interpolate(self.index[:, None].float(), size=size, mode="nearest")[:, 0].long()
            dense = None if self.dense is None else F.interpolate(self.dense, size=size, mode="nearest")
            return index, dense
        return self._cached(("at", size), make)

    def neighbours(self, size: Tuple[int, int], ks: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The first conv's inputs at ``size``, per pixel:

        * ``rows: (N*h*w, ks*ks)`` int64: for each kernel offset the lookup-table row
          ``offset * (onehot_nc + 1) + class`` ("no class" outside the image);
        * ``values``: None without continuous channels, else ``(N*h*w, ks*ks*E)``: each continuous
          channel's value at each offset (offset-major; 0 outside the image, as zero padding).
        """
        def make():
            index, dense = self.at(size)
            pad = ks // 2
            h, w = size
            offsets = [(dy, dx) for dy in range(ks) for dx in range(ks)]
            padded = F.pad(index, (pad, pad, pad, pad), value=self.onehot_nc)
            rows_per_offset = self.onehot_nc + 1
            cols = [padded[:, dy:dy + h, dx:dx + w] + o * rows_per_offset for o, (dy, dx) in enumerate(offsets)]
            rows = torch.stack(cols, dim=-1).reshape(-1, ks * ks)
            if dense is None:
                return rows, None
            e = dense.size(1)
            values = F.pad(dense, (pad, pad, pad, pad))
            vals = torch.stack([values[:, :, dy:dy + h, dx:dx + w] for dy, dx in offsets], dim=-1)
            return rows, vals.permute(0, 2, 3, 4, 1).reshape(rows.size(0), ks * ks * e)
        return self._cached(("nb", tuple(size), ks), make)

    def boundary(self, size: Tuple[int, int], ks: int) -> Optional[torch.Tensor]:
        """Flat indices (into N*h*w) of the pixels where gamma/beta are *not* class constants,
        or None when they are too many for the region-constant shortcut to pay."""
        def make():
            if not self.region_constant:
                return None
            index, dense = self.at(size)
            reach = 2 * (ks // 2)  # first conv's reach + second conv's reach
            if reach == 0:
                return None
            h, w = size
            window = 2 * reach + 1
            lab = index[:, None].float()
            hi = F.max_pool2d(lab, window, stride=1, padding=reach)
            lo = -F.max_pool2d(-lab, window, stride=1, padding=reach)
            uniform = hi == lo
            if dense is not None:
                busy = dense.abs().sum(dim=1, keepdim=True)
                uniform &= F.max_pool2d(busy, window, stride=1, padding=reach) == 0
            inside = torch.zeros_like(uniform)
            inside[:, :, reach:h - reach, reach:w - reach] = True
            uniform &= inside
            flat = (~uniform).reshape(-1)
            positions = flat.nonzero().squeeze(1)
            if positions.numel() > REGION_CONSTANT_MAX_BOUNDARY * flat.numel():
                return None
            return positions
        return self._cached(("bd", tuple(size), ks), make)

    def windows(self, size: Tuple[int, int], ks: int) -> torch.Tensor:
        """``(P, ks*ks)``: for each boundary pixel, the rows of its ks x ks window in the
        zero-padded ``(N, h+2p, w+2p)`` map flattened (only valid when ``boundary`` is not None)."""
        def make():
            return _window_index(self.boundary(size, ks), size, ks)
        return self._cached(("win", tuple(size), ks), make)

    def patches(self, size: Tuple[int, int], ks: int) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The distinct label windows at ``size`` (module docstring, 3.), or None when the map has
        non-binary continuous channels or too few repeats for the lookup to pay:

        * ``pixel_ids: (N*h*w,)`` int64: each pixel's distinct ks x ks arrangement of label patches;
        * ``patch_rows: (U1, ks*ks)``: per distinct ks x ks label patch, its lookup-table rows
          (``offset * num_ids + folded id``) for ``first_conv_table``;
        * ``arrangements: (U2, ks*ks)``: per distinct arrangement, the patch of each kernel offset
          (``U1`` stands for "outside the image": a zero activation, as the conv's zero padding).
        """
        def make():
            if self.folded is None or ks == 1:
                return None
            ids = self._folded_at(size)
            n, (h, w), pad = ids.size(0), size, ks // 2
            labels = F.pad(ids, (pad, pad, pad, pad), value=self.onehot_nc)  # "no class" outside
            patch_ids, num_patches = _window_ids(labels, ks, self.num_ids)
            offsets = torch.arange(ks * ks, device=ids.device) * self.num_ids
            patch_rows = _window_values(labels, patch_ids, num_patches, ks) + offsets
            around = F.pad(patch_ids, (pad, pad, pad, pad), value=num_patches)
            pixel_ids, num_arrangements = _window_ids(around, ks, num_patches + 1)
            if num_arrangements > REGION_CONSTANT_MAX_BOUNDARY * n * h * w:
                return None  # hardly any repeats: the dense conv is cheaper
            arrangements = _window_values(around, pixel_ids, num_arrangements, ks)
            return pixel_ids.reshape(-1), patch_rows, arrangements
        return self._cached(("patches", tuple(size), ks), make)

    def _folded_at(self, size: Tuple[int, int]) -> torch.Tensor:
        if tuple(size) == self.size:
            return self.folded
        return F.interpolate(self.folded[:, None].float(), size=size, mode="nearest")[:, 0].long()


def _tuple_ids(parts, bound: int) -> Tuple[torch.Tensor, int]:
    """Dense ids (``0 .. count-1``) of the tuples ``(parts[0][i], parts[1][i], ...)`` of int64
    tensors with values below ``bound``, and ``count``. The parts are packed into one int64 key,
    made dense again (``torch.unique``) whenever the next part would not fit in 63 bits."""
    bits = max(1, (bound - 1).bit_length())
    key, key_bound = parts[0], bound
    for part in parts[1:]:
        if max(1, (key_bound - 1).bit_length()) + bits > 63:
            uniq, key = torch.unique(key, return_inverse=True)
            key_bound = uniq.numel()
        key = (key << bits) | part
        key_bound <<= bits
    uniq, inverse = torch.unique(key, return_inverse=True)
    return inverse, uniq.numel()


def _window_ids(grid: torch.Tensor, ks: int, bound: int) -> Tuple[torch.Tensor, int]:
    """``grid: (N, h + ks - 1, w + ks - 1)`` int64 below ``bound`` -> ``(N, h, w)`` dense ids of
    each ks x ks window, and how many distinct windows there are (rows first, then columns)."""
    h, w = grid.size(1) - ks + 1, grid.size(2) - ks + 1
    rows, count = _tuple_ids([grid[:, :, dx:dx + w] for dx in range(ks)], bound)
    return _tuple_ids([rows[:, dy:dy + h] for dy in range(ks)], count)


def _window_values(grid: torch.Tensor, window_ids: torch.Tensor, count: int, ks: int) -> torch.Tensor:
    """``(count, ks*ks)``: the ``grid`` values of one window per id (offset-major), read at the
    id's first pixel (any pixel with that id has the same window)."""
    flat = window_ids.reshape(-1)
    pixel = torch.arange(flat.numel(), device=flat.device)
    first = pixel.new_full((count,), flat.numel()).scatter_reduce_(0, flat, pixel, "amin")
    return grid.reshape(-1)[_window_index(first, tuple(window_ids.shape[1:]), ks)]


def _window_index(positions: torch.Tensor, size: Tuple[int, int], ks: int) -> torch.Tensor:
    """``(P, ks*ks)``: for flat pixel ``positions`` into ``(N, h, w)``, the flat indices of each
    pixel's ks x ks window (offset-major) in the ``(N, h + ks - 1, w + ks - 1)`` padded map."""
    (h, w), pad = size, ks // 2
    hp, wp = h + 2 * pad, w + 2 * pad
    b, rem = positions // (h * w), positions % (h * w)
    top_left = b * (hp * wp) + (rem // w) * wp + rem % w
    offsets = torch.tensor([dy * wp + dx for dy in range(ks) for dx in range(ks)], device=positions.device)
    return top_left[:, None] + offsets[None, :]


def first_conv_table(weight: torch.Tensor, onehot_nc: int, binary_nc: int = 0) -> torch.Tensor:
    """``(hidden, C, k, k)`` conv weight -> ``(k*k*V, hidden)`` lookup table, ``V = (onehot_nc + 1)
    * 2**binary_nc``: row ``offset * V + bits * (onehot_nc + 1) + class`` is the weight column of
    that class at that kernel offset plus those of the binary channels set in ``bits`` (the
    channels right after the one-hot ones); the extra class row is zero (no class / padding)."""
    table = weight[:, :onehot_nc].permute(2, 3, 1, 0)  # (k, k, L, hidden)
    table = F.pad(table, (0, 0, 0, 1))  # zero row for "no class"
    if binary_nc:
        states = torch.arange(1 << binary_nc, device=weight.device)
        bits = ((states[:, None] >> torch.arange(binary_nc, device=weight.device)) & 1).to(weight.dtype)
        columns = weight[:, onehot_nc:onehot_nc + binary_nc].permute(2, 3, 1, 0)  # (k, k, E, hidden)
        table = table[:, :, None] + torch.matmul(bits, columns)[:, :, :, None]  # (k, k, 2**E, L+1, hidden)
    return table.reshape(-1, weight.size(0))


class _BagSum(torch.autograd.Function):
    """``F.embedding_bag(rows, table, mode="sum")`` with a backward that adds the gradient
    into the table with one ``index_add_`` per bag column, instead of embedding_bag's
    sort-based backward (several times slower on CPU here)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.table_shape = table.shape
        return F.embedding_bag(rows, table, mode="sum")

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        grad_table = grad.new_zeros(ctx.table_shape)
        for col in range(rows.size(1)):
            grad_table.index_add_(0, rows[:, col], grad)
        return grad_table, None


class _WindowConv(torch.autograd.Function):
    """``relu`` + zero padding + the fused gamma/beta k x k conv of a channels-last map,
    evaluated only at listed pixels. For backward it keeps the padded activation (the relu
    mask is read back from it), the window indices and the parameters themselves; the
    (pixels, k*k*hidden) patch matrix and the fused weight matrix are rebuilt there (chunk by
    chunk) instead of being kept alive, so the fast path holds less memory than the conv
    path, whose weight gradients keep the whole one-hot map of every layer."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, windows: torch.Tensor, weight_g: torch.Tensor, weight_b: torch.Tensor,
                bias_g: torch.Tensor, bias_b: torch.Tensor, pad: int, column_major: bool = False) -> torch.Tensor:
        n, h, w, hidden = pre.shape
        actv = F.pad(pre.clamp_min(0), (0, 0, pad, pad, pad, pad))  # zero padding, as the plain conv
        flat = actv.view(-1, hidden)
        wmat = _window_matrix(weight_g, weight_b, pre.dtype)
        bias = torch.cat([bias_g, bias_b]).to(pre.dtype)
        if column_major:  # (pixels, 2C) stored as its transpose: a contiguous (2C, pixels) for the caller
            out = pre.new_empty(wmat.size(0), windows.size(0)).t()
        else:
            out = pre.new_empty(windows.size(0), wmat.size(0))
        for start, stop in _chunks(windows.size(0), windows.size(1) * hidden):
            patches = flat.index_select(0, windows[start:stop].reshape(-1)).view(stop - start, -1)
            torch.addmm(bias, patches, wmat.t(), out=out[start:stop])
        ctx.save_for_backward(actv, windows, weight_g, weight_b)
        ctx.pad, ctx.size = pad, (h, w)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        actv, windows, weight_g, weight_b = ctx.saved_tensors
        need_pre, _, need_wg, need_wb, need_bg, need_bb, _, _ = ctx.needs_input_grad
        need_w = need_wg or need_wb
        hidden = actv.size(-1)
        flat = actv.view(-1, hidden)
        wmat = _window_matrix(weight_g, weight_b, actv.dtype)
        grad_flat = torch.zeros_like(flat) if need_pre else None
        grad_w = torch.zeros_like(wmat) if need_w else None
        for start, stop in _chunks(windows.size(0), windows.size(1) * hidden):
            index = windows[start:stop].reshape(-1)
            g = grad[start:stop]
            if need_w:
                grad_w.addmm_(g.t(), flat.index_select(0, index).view(stop - start, -1))
            if need_pre:
                grad_flat.index_add_(0, index, (g @ wmat).view(-1, hidden))
        grad_pre = None
        if need_pre:
            (h, w), pad = ctx.size, ctx.pad
            inner = (slice(None), slice(pad, pad + h), slice(pad, pad + w))
            grad_pre = grad_flat.view(actv.shape)[inner] * (actv[inner] > 0)
        grads_w = (None, None)
        if need_w:  # (2C, k*k*hidden) -> gamma's and beta's (C, hidden, k, k)
            k = weight_g.size(-1)
            full = grad_w.view(-1, k, k, hidden).permute(0, 3, 1, 2)
            grads_w = tuple(g.to(weight_g.dtype) for g in full.split(weight_g.size(0)))
        grads_b = (None, None)
        if need_bg or need_bb:
            grads_b = tuple(g.to(weight_g.dtype) for g in grad.sum(0).split(weight_g.size(0)))
        return grad_pre, None, *grads_w, *grads_b, None, None


class _FusedConv(torch.autograd.Function):
    """gamma's and beta's convs as one conv over ``relu(pre)`` (``pre: (N, h, w, hidden)``,
    used where most pixels are near a boundary). The concatenated weight is built inside and
    rebuilt in backward: autograd keeps the two parameters, not a concatenated copy."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, weight_g: torch.Tensor, weight_b: torch.Tensor, bias_g: torch.Tensor,
                bias_b: torch.Tensor) -> torch.Tensor:
        actv = pre.clamp_min(0).permute(0, 3, 1, 2)  # NCHW view of NHWC memory (channels_last)
        weight = torch.cat([weight_g, weight_b]).to(pre.dtype)
        bias = torch.cat([bias_g, bias_b]).to(pre.dtype)
        ctx.save_for_backward(actv, weight_g, weight_b)
        return F.conv2d(actv, weight, bias, padding=weight.size(-1) // 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        actv, weight_g, weight_b = ctx.saved_tensors
        need_pre, need_wg, need_wb, need_bg, need_bb = ctx.needs_input_grad
        weight = torch.cat([weight_g, weight_b]).to(actv.dtype)
        pad = weight.size(-1) // 2
        grad_in, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad, actv, weight, [weight.size(0)], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
            [need_pre, need_wg or need_wb, need_bg or need_bb])
        grad_pre = None
        if need_pre:
            grad_pre = (grad_in * (actv > 0)).permute(0, 2, 3, 1)
        c = weight_g.size(0)
        grads_w = (None, None) if grad_w is None else tuple(g.to(weight_g.dtype) for g in grad_w.split(c))
        grads_b = (None, None) if grad_b is None else tuple(g.to(weight_g.dtype) for g in grad_b.split(c))
        return grad_pre, *grads_w, *grads_b


def _window_matrix(weight_g: torch.Tensor, weight_b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """gamma's and beta's (C, hidden, k, k) weights -> one (2C, k*k*hidden) matrix whose
    columns follow the window order of ``LabelCode.windows`` (offset-major, then channel)."""
    weight = torch.cat([weight_g, weight_b]).to(dtype)
    return weight.permute(0, 2, 3, 1).reshape(weight.size(0), -1)


def _chunks(total: int, row_elements: int):
    """[start, stop) ranges whose patch matrices hold at most BOUNDARY_CHUNK_ELEMENTS values."""
    step = max(1, BOUNDARY_CHUNK_ELEMENTS // max(1, row_elements))
    return [(start, min(total, start + step)) for start in range(0, total, step)]


def shared_preactivation(code: LabelCode, size: Tuple[int, int], weight: torch.Tensor,
                         bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``conv(segmap)`` of the plain path (before its relu), as ``(N, h, w, hidden)`` (channels
    last): per pixel the sum of its ks*ks class rows of the lookup table, plus the continuous
    channels' values times their weight columns (a thin matmul), plus the bias."""
    ks = weight.size(-1)
    dtype = _compute_dtype(weight)
    rows, values = code.neighbours(size, ks)
    # In place on the lookup's output (its backward needs only the rows): no extra copies of
    # the (pixels, hidden) map.
    out = _BagSum.apply(first_conv_table(weight, code.onehot_nc).to(dtype), rows)
    if values is not None:
        # (ks*ks*E, hidden): row offset * E + e = the weight column of channel e at that offset
        dense_weight = weight[:, code.onehot_nc:].permute(2, 3, 1, 0).reshape(-1, weight.size(0))
        out = out.addmm_(values.to(dtype), dense_weight.to(dtype))
    if bias is not None:
        out = out.add_(bias.to(dtype))
    n = code.index.size(0)
    h, w = size
    return out.view(n, h, w, -1)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """Under autocast the lookup runs in the autocast dtype, like the plain conv would."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def gamma_beta(code: LabelCode, pre: torch.Tensor, shared_weight: torch.Tensor,
               shared_bias: Optional[torch.Tensor], weights: Tuple[torch.Tensor, torch.Tensor],
               biases: Tuple[torch.Tensor, torch.Tensor], channels_last: bool = True) -> torch.Tensor:
    """gamma and beta (one fused conv) over ``relu(pre)``, ``pre: (N, h, w, hidden)`` ->
    ``(N, 2C, h, w)`` (gamma's C channels, then beta's), laid out NHWC (``channels_last``) or
    with each sample's channel planes contiguous.

    ``weights``/``biases``: gamma's and beta's parameters. Region pixels take their class's
    constant; the rest are computed exactly (see the module docstring).
    """
    n, h, w, hidden = pre.shape
    ks = weights[0].size(-1)
    positions = code.boundary((h, w), ks)
    dtype = pre.dtype
    with torch.autocast(pre.device.type, enabled=False):  # dtypes are settled: pre's
        if positions is None:
            return _FusedConv.apply(pre, *weights, *biases)
        # Class constants: a_c = relu(bias + sum over offsets of the class's table rows).
        table = first_conv_table(shared_weight, code.onehot_nc).to(dtype)
        per_class = table.view(ks * ks, code.onehot_nc + 1, hidden).sum(0)
        if shared_bias is not None:
            per_class = per_class + shared_bias.to(dtype)
        per_class = F.relu(per_class)
        summed = torch.cat([weights[0].sum(dim=(2, 3)), weights[1].sum(dim=(2, 3))]).to(dtype)
        constants = F.linear(per_class, summed, torch.cat(biases).to(dtype))  # (L+1, 2C)
        index, _ = code.at((h, w))
        values = None
        if positions.numel():
            values = _WindowConv.apply(pre, code.windows((h, w), ks), *weights, *biases, ks // 2,
                                       not channels_last)
        if channels_last:
            out = F.embedding(index.reshape(-1), constants)  # (N*h*w, 2C)
            if values is not None:
                out.index_copy_(0, positions, values)  # in place: embedding's backward needs only indices
            return out.view(n, h, w, -1).permute(0, 3, 1, 2)
        # Channel-major (2C, N*h*w): each sample's planes come out NCHW-contiguous, so an NCHW
        # network needs no layout copy (and its gradient none back).
        out = constants.t().contiguous().index_select(1, index.reshape(-1))
        if values is not None:
            out.index_copy_(1, positions, values.t())  # in place: index_select's backward needs only indices
    return out.view(-1, n, h, w).transpose(0, 1)


def modulation(code: LabelCode, size: Tuple[int, int], shared_weight: torch.Tensor,
               shared_bias: Optional[torch.Tensor], weights: Tuple[torch.Tensor, torch.Tensor],
               biases: Tuple[torch.Tensor, torch.Tensor], channels_last: bool = True) -> torch.Tensor:
    """A SPADE layer's gamma and beta at ``size`` -> ``(N, 2C, h, w)`` (gamma's C channels, then
    beta's), NHWC (``channels_last``) or with each sample's planes contiguous: once per distinct
    label window where the map allows it (module docstring, 3.), else from the per-pixel lookup
    (1.) and the region constants (2.)."""
    ks = shared_weight.size(-1)
    found = code.patches(size, ks)
    if found is None:
        pre = shared_preactivation(code, size, shared_weight, shared_bias)
        return gamma_beta(code, pre, shared_weight, shared_bias, weights, biases, channels_last)
    pixel_ids, patch_rows, arrangements = found
    n, (h, w) = code.index.size(0), size
    dtype = _compute_dtype(shared_weight)
    with torch.autocast(shared_weight.device.type, enabled=False):  # dtypes are settled: dtype
        table = first_conv_table(shared_weight, code.onehot_nc, code.dense_nc).to(dtype)
        pre = _BagSum.apply(table, patch_rows)  # (U1, hidden): the first conv once per patch
        if shared_bias is not None:
            pre = pre.add_(shared_bias.to(dtype))
        # A last row of zeros stands for "outside the image" (relu keeps it 0: zero padding).
        pre = F.pad(pre, (0, 0, 0, 1))
        # The second conv once per arrangement: _WindowConv over a one-row "image" of patches.
        per_window = _WindowConv.apply(pre[None, None], arrangements, *weights, *biases, 0, False)
        if channels_last:
            return F.embedding(pixel_ids, per_window).view(n, h, w, -1).permute(0, 3, 1, 2)
        # Channel-major (2C, N*h*w): each sample's planes come out NCHW-contiguous.
        out = per_window.t().contiguous().index_select(1, pixel_ids)
    return out.view(-1, n, h, w).transpose(0, 1)
