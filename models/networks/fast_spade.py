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

Everything is built from differentiable ops on the layer's own parameters (same names and
shapes as the plain layer), so outputs and parameter gradients agree to float rounding and the
checkpoints are interchangeable. The caller guarantees the one-hot part is exactly one-hot
(``Pix2PixModel.preprocess_input`` builds it so).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

# Above this share of "boundary" pixels the dense second conv is cheaper than gather + matmul.
REGION_CONSTANT_MAX_BOUNDARY = 0.6
# Boundary pixels are gathered into patch matrices of at most this many elements at a time.
BOUNDARY_CHUNK_ELEMENTS = 1 << 20


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
        onehot = semantics[:, :onehot_nc]
        index = onehot.argmax(dim=1)
        self.index = torch.where(onehot.amax(dim=1) > 0, index, torch.full_like(index, onehot_nc))
        self.dense = semantics[:, onehot_nc:] if semantics.size(1) > onehot_nc else None
        self.size = tuple(semantics.shape[2:])
        self._cache: Dict[tuple, object] = {}

    @property
    def dense_nc(self) -> int:
        return 0 if self.dense is None else self.dense.size(1)

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
        """The first conv at ``size`` as bags of lookup-table rows, one bag per pixel:

        * ``rows: (N*h*w, ks*ks*(1 + E))`` int64: for each kernel offset the row
          ``offset * (onehot_nc + 1) + class`` ("no class" outside the image), then for each
          offset and continuous channel ``e`` the row ``ks*ks*(onehot_nc + 1) + offset * E + e``;
        * ``weights``: None without continuous channels, else ``(N*h*w, ks*ks*(1 + E))``: 1 for
          the class rows, the channel's value at that offset (0 outside the image) for the rest.
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
            first = ks * ks * rows_per_offset
            dense_rows = torch.arange(first, first + ks * ks * e, device=rows.device)
            rows = torch.cat([rows, dense_rows.expand(rows.size(0), -1)], dim=1)
            values = F.pad(dense, (pad, pad, pad, pad))  # zero padding, as the plain conv
            vals = torch.stack([values[:, :, dy:dy + h, dx:dx + w] for dy, dx in offsets], dim=-1)
            vals = vals.permute(0, 2, 3, 4, 1).reshape(rows.size(0), ks * ks * e)  # offset-major
            weights = torch.cat([vals.new_ones(rows.size(0), ks * ks), vals], dim=1)
            return rows, weights
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


def first_conv_table(weight: torch.Tensor, onehot_nc: int) -> torch.Tensor:
    """``(hidden, C, k, k)`` conv weight -> ``(k*k*(onehot_nc+1), hidden)`` lookup table:
    row ``offset * (onehot_nc + 1) + class`` is the weight column of that class at that
    kernel offset; the extra row per offset is zero (no class / padding)."""
    k = weight.size(-1)
    table = weight[:, :onehot_nc].permute(2, 3, 1, 0)  # (k, k, L, hidden)
    table = F.pad(table, (0, 0, 0, 1))  # zero row for "no class"
    return table.reshape(k * k * (onehot_nc + 1), weight.size(0))


def shared_activation(code: LabelCode, size: Tuple[int, int], weight: torch.Tensor,
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``relu(conv(segmap))`` of the plain path, as ``(N, h, w, hidden)`` (channels last):
    one weighted bag-sum per pixel over the class rows, the continuous channels' rows
    (weighted by their values) and the bias row."""
    ks = weight.size(-1)
    dtype = _compute_dtype(weight)
    rows, weights = code.neighbours(size, ks)
    parts = [first_conv_table(weight, code.onehot_nc)]
    if code.dense_nc:
        # row offset * E + e = the weight column of continuous channel e at that offset
        parts.append(weight[:, code.onehot_nc:].permute(2, 3, 1, 0).reshape(-1, weight.size(0)))
    if bias is not None:  # the bias as one more row of every bag: summed for free
        parts.append(bias[None])
        rows = torch.cat([rows, rows.new_full((rows.size(0), 1), sum(p.size(0) for p in parts) - 1)], dim=1)
        if weights is not None:
            weights = torch.cat([weights, weights.new_ones(weights.size(0), 1)], dim=1)
    table = torch.cat(parts).to(dtype)
    out = F.embedding_bag(rows, table, mode="sum",
                          per_sample_weights=None if weights is None else weights.to(dtype))
    n = code.index.size(0)
    h, w = size
    return F.relu(out.view(n, h, w, -1))


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """Under autocast the lookup runs in the autocast dtype, like the plain conv would."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def gamma_beta(code: LabelCode, actv: torch.Tensor, shared_weight: torch.Tensor,
               shared_bias: Optional[torch.Tensor], weight: torch.Tensor,
               bias: torch.Tensor) -> torch.Tensor:
    """The fused gamma/beta conv over ``actv: (N, h, w, hidden)`` -> ``(N, 2C, h, w)``.

    ``weight``/``bias``: gamma's and beta's concatenated. Region pixels take their class's
    constant; the rest are computed exactly (see the module docstring).
    """
    n, h, w, hidden = actv.shape
    ks = weight.size(-1)
    positions = code.boundary((h, w), ks)
    actv_nchw = actv.permute(0, 3, 1, 2)
    if positions is None:
        return F.conv2d(actv_nchw, weight.to(actv.dtype), bias.to(actv.dtype), padding=ks // 2)
    dtype = actv.dtype
    # Class constants: a_c = relu(bias + sum over offsets of the class's table rows).
    table = first_conv_table(shared_weight, code.onehot_nc).to(dtype)
    per_class = table.view(ks * ks, code.onehot_nc + 1, hidden).sum(0)
    if shared_bias is not None:
        per_class = per_class + shared_bias.to(dtype)
    per_class = F.relu(per_class)
    constants = F.linear(per_class, weight.sum(dim=(2, 3)).to(dtype), bias.to(dtype))  # (L+1, 2C)
    index, _ = code.at((h, w))
    out = F.embedding(index.reshape(-1), constants)  # (N*h*w, 2C)
    if positions.numel():
        pad = ks // 2
        padded = F.pad(actv, (0, 0, pad, pad, pad, pad))  # zero padding, as the plain conv
        hp, wp = h + 2 * pad, w + 2 * pad
        flat = padded.reshape(n * hp * wp, hidden)
        # pixel (b, y, x) -> top-left of its window in the padded map
        b = positions // (h * w)
        rem = positions % (h * w)
        base = b * (hp * wp) + (rem // w) * wp + rem % w
        offsets = torch.tensor([dy * wp + dx for dy in range(ks) for dx in range(ks)],
                               device=actv.device)
        wmat = weight.permute(0, 2, 3, 1).reshape(weight.size(0), ks * ks * hidden).to(dtype)
        # In chunks: one big patch matrix costs more in fresh memory than in arithmetic.
        chunk = max(1, BOUNDARY_CHUNK_ELEMENTS // (ks * ks * hidden))
        values = []
        for start in range(0, base.numel(), chunk):
            rows = (base[start:start + chunk, None] + offsets[None, :]).reshape(-1)
            patches = flat.index_select(0, rows).view(-1, ks * ks * hidden)
            values.append(F.linear(patches, wmat, bias.to(dtype)))
        out = out.index_copy(0, positions, torch.cat(values) if len(values) > 1 else values[0])
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)
