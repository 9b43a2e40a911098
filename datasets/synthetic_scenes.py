"""Procedural street scenes: label map, instances, metric depth and a matching photo-like image.

Used by the ``synthetic`` dataset mode (no download needed) and by
``datasets/make_synthetic_dataset.py``. A scene is a small 3-D world (a road with lanes,
sidewalks, grass, building facades, trees, cars, people, poles and signs) seen by a pinhole
camera standing on the road. Everything is sampled in metres from a generator seeded by
``(seed, index)``, so the same scene comes out at any resolution; only the pixel-level grain
noise depends on the size.

Geometry: the ground plane (road, lane markings, sidewalks, grass) is intersected per pixel;
facades, fences and car bodies are vertical/horizontal quads intersected per pixel (so their
depth varies across them); trees, people, poles and signs are cut-outs standing on the
ground at the depth of their foot point. Occlusion uses a z-buffer, which gives the same
result as painting far to near; objects are visited near to far so that ones completely
hidden behind nearer ones are skipped. Perspective follows from the camera: far objects are
smaller and closer to the horizon.

Appearance depends on class and depth: per-class base colours with textures laid out in
world units (asphalt noise, paving tiles, mowing stripes, bricks, windows, fence bars), so
they shrink with distance and fade out where they would alias; sun-side shading and cast
shadows; and distance fog that blends toward the sky colour at the horizon.

Rendering is vectorised numpy over bounding boxes: about 5-10 ms at 64x64 and 30-50 ms at
256x512 on one CPU core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

CLASS_NAMES: List[str] = ["sky", "road", "sidewalk", "grass", "building", "tree", "car",
                          "person", "pole", "sign", "fence", "lane marking"]
SKY, ROAD, SIDEWALK, GRASS, BUILDING, TREE, CAR, PERSON, POLE, SIGN, FENCE, MARKING = range(12)
NUM_CLASSES = len(CLASS_NAMES)
# Label-map display colours (Cityscapes-like where the class exists there).
PALETTE = np.array([[70, 130, 180], [128, 64, 128], [244, 35, 232], [152, 251, 152],
                    [70, 70, 70], [107, 142, 35], [0, 0, 142], [220, 20, 60],
                    [153, 153, 153], [220, 220, 0], [190, 153, 153], [255, 255, 255]],
                   dtype=np.uint8)
# Countable classes: their pixels get instance ids class * 1000 + k (k >= 1), like Cityscapes;
# the other ("stuff") pixels get their class id.
THING_CLASSES = (TREE, CAR, PERSON, POLE, SIGN)
# The test/val split draws scenes from this index on, so it never overlaps training scenes.
TEST_INDEX_OFFSET = 1_000_000_000


def split_index(phase: str, i: int) -> int:
    """Scene index of sample ``i`` of a split: train uses 0, 1, ...; test/val use the offset."""
    return i if phase == "train" else TEST_INDEX_OFFSET + i

_F32 = np.float32


def _c(*rgb: float) -> np.ndarray:
    return np.array(rgb, dtype=_F32)


# ----------------------------------------------------------------------------- scene description
@dataclass
class _Block:
    """A building facade: the vertical plane X = x between z0 and z1, ``height`` metres high."""
    x: float
    z0: float
    z1: float
    height: float
    color: np.ndarray
    floor_h: float
    win_sp: float
    win_w: float
    win_h: float
    glass: np.ndarray
    brick: bool
    shop: bool
    phase: float
    lit: float
    cross: bool = False   # a building across the street: plane Z = x, spanning X in [z0, z1]


@dataclass
class _Object:
    kind: str            # tree, conifer, person, pole, sign, car
    x: float
    z: float
    p: dict = field(default_factory=dict)


@dataclass
class _Scene:
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    clouds: float
    cloud_color: np.ndarray
    fog_dist: float
    sun_side: int
    sun: float
    exposure: float
    cam_h: float
    horizon: float
    yaw: float
    focal: float
    rc: float
    lane_w: float
    lanes: int
    rw: Tuple[float, float]        # road half width to the (left, right)
    verge: Tuple[float, float]
    sidewalk: Tuple[float, float]
    beyond: Tuple[int, int]        # ground class behind the sidewalk
    side_kind: Tuple[str, str]
    road_color: np.ndarray
    sidewalk_color: np.ndarray
    grass_color: np.ndarray
    tile: float
    mow: bool
    center_line: str
    dash: Tuple[float, float]
    crosswalk: Optional[float]
    park_line: bool
    facade_shadow: Tuple[float, float]
    blocks: List[_Block]
    fences: List[dict]
    treelines: List[dict]
    objects: List[_Object]


_FACADE_COLORS = [_c(.80, .72, .58), _c(.60, .60, .62), _c(.62, .33, .25), _c(.88, .87, .83),
                  _c(.86, .76, .50), _c(.62, .70, .78), _c(.45, .42, .40), _c(.75, .55, .45),
                  _c(.70, .74, .66)]
_CAR_COLORS = [_c(.92, .92, .92), _c(.08, .08, .09), _c(.62, .63, .66), _c(.35, .36, .38),
               _c(.08, .14, .35), _c(.65, .08, .08), _c(.15, .30, .65), _c(.10, .28, .18),
               _c(.75, .68, .52), _c(.90, .72, .10)]
_SKIN = [_c(.87, .68, .54), _c(.72, .52, .38), _c(.52, .36, .25), _c(.35, .24, .17)]
_HAIR = [_c(.08, .06, .05), _c(.30, .20, .12), _c(.65, .52, .30), _c(.55, .55, .55)]


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float) -> np.ndarray:
    out = color * (1 + amount * (2 * rng.random(3, dtype=_F32) - 1))
    return np.minimum(out, 1, out=out)


def _sample_scene(rng: np.random.Generator) -> _Scene:
    """Everything about a scene, in metres and colours; independent of the output size."""
    weather = rng.choice(["clear", "overcast", "dusk"], p=[0.55, 0.3, 0.15])
    if weather == "clear":
        top, hor = _c(.28, .48, .82), _c(.70, .80, .92)
        sun, fog, clouds, cloud_col = rng.uniform(.35, .5), rng.uniform(120, 320), rng.uniform(0, .6), _c(.95, .95, .97)
    elif weather == "overcast":
        top, hor = _c(.58, .61, .66), _c(.78, .80, .83)
        sun, fog, clouds, cloud_col = rng.uniform(.05, .12), rng.uniform(50, 140), rng.uniform(.3, .6), _c(.68, .70, .74)
    else:
        top, hor = _c(.22, .30, .58), _c(.95, .70, .50)
        sun, fog, clouds, cloud_col = rng.uniform(.25, .4), rng.uniform(90, 220), rng.uniform(0, .5), _c(.85, .60, .55)
    lanes = 1 if rng.random() < 0.6 else 2
    lane_w = rng.uniform(2.9, 3.6)
    park = [2.3 if rng.random() < 0.4 else 0.0 for _ in range(2)]
    rw = (lanes * lane_w + park[0], lanes * lane_w + park[1])
    lane0 = int(rng.integers(lanes))
    rc = -(lane_w * (lane0 + 0.5)) + rng.uniform(-0.3, 0.3)
    kinds = tuple(_choice(rng, ["urban", "urban", "verge", "park"]) for _ in range(2))
    verge = tuple(rng.uniform(1.5, 3.0) if k == "verge" else 0.0 for k in kinds)
    sidewalk = tuple(rng.uniform(1.8, 4.5) for _ in range(2))
    beyond = tuple(GRASS if k == "park" else SIDEWALK for k in kinds)
    sun_side = 1 if rng.random() < 0.5 else -1
    s = _Scene(
        sky_top=_jitter(rng, top, .08), sky_horizon=_jitter(rng, hor, .05), clouds=float(clouds),
        cloud_color=cloud_col, fog_dist=float(fog), sun_side=sun_side, sun=float(sun),
        exposure=float(rng.uniform(.9, 1.08)), cam_h=float(rng.uniform(1.3, 2.0)),
        horizon=float(rng.uniform(.38, .52)), yaw=float(rng.uniform(-.07, .07)),
        focal=float(rng.uniform(.75, 1.0)), rc=float(rc), lane_w=float(lane_w), lanes=lanes,
        rw=rw, verge=verge, sidewalk=sidewalk, beyond=beyond, side_kind=kinds,
        road_color=_jitter(rng, _c(.31, .31, .33) * rng.uniform(.75, 1.2), .05),
        sidewalk_color=_jitter(rng, _choice(rng, [_c(.62, .60, .56), _c(.70, .66, .60), _c(.55, .55, .57)]), .05),
        grass_color=_jitter(rng, _choice(rng, [_c(.30, .50, .18), _c(.36, .55, .20), _c(.48, .52, .26)]), .08),
        tile=float(rng.uniform(.4, 1.0)), mow=bool(rng.random() < .4),
        center_line=str(rng.choice(["dashed", "double_yellow", "solid", "none"], p=[.45, .25, .2, .1])),
        dash=(float(rng.uniform(6, 12)), float(rng.uniform(.3, .5))),
        crosswalk=float(rng.uniform(8, 30)) if rng.random() < 0.3 else None,
        park_line=bool(rng.random() < .5),
        facade_shadow=(0.0, 0.0), blocks=[], fences=[], treelines=[], objects=[])
    shadow = [0.0, 0.0]
    if weather != "overcast":  # buildings on the sun's side shade the street next to them
        side_i = 0 if sun_side < 0 else 1
        if kinds[side_i] != "park":
            shadow[side_i] = float(rng.uniform(0, sidewalk[side_i] + rw[side_i] + 2))
    s.facade_shadow = (shadow[0], shadow[1])
    _sample_sides(rng, s)
    _sample_traffic(rng, s)
    return s


def _lit(s: _Scene, normal_x: float) -> float:
    """Brightness of a vertical face whose normal points along +X (1), -X (-1) or -Z (0)."""
    if normal_x == 0:
        return 1.0 - 0.35 * s.sun
    return 1.0 if normal_x == s.sun_side else 1.0 - s.sun


def _new_block(rng: np.random.Generator, s: _Scene, x: float, z0: float, z1: float,
               height: float, normal: float) -> _Block:
    color = _jitter(rng, _choice(rng, _FACADE_COLORS), .06)
    return _Block(x=x, z0=z0, z1=z1, height=height, color=color,
                  floor_h=float(rng.uniform(2.8, 3.6)), win_sp=float(rng.uniform(2.0, 3.6)),
                  win_w=float(rng.uniform(.35, .6)), win_h=float(rng.uniform(.4, .6)),
                  glass=_jitter(rng, _c(.16, .20, .26), .15),
                  brick=bool(color[0] > color[2] * 1.6 and rng.random() < .7),
                  shop=bool(rng.random() < .5), phase=float(rng.uniform(0, 10)),
                  lit=_lit(s, normal))


def _sample_sides(rng: np.random.Generator, s: _Scene) -> None:
    for i, side in enumerate((-1, 1)):
        kind = s.side_kind[i]
        curb = s.rw[i]
        outer = curb + s.verge[i] + s.sidewalk[i]
        x_of = lambda d: s.rc + side * d  # noqa: E731  (distance from the road centre -> world X)
        normal = -side  # facades face the road
        if kind in ("urban", "verge"):
            z = rng.uniform(-30, -5)
            tall = rng.uniform(8, 26)
            prev: Optional[Tuple[float, float, float]] = None  # (end z, height, setback)
            while z < 260:
                length = rng.uniform(8, 32)
                if rng.random() < 0.12:  # an alley
                    z += rng.uniform(3, 8)
                setback = 0.0 if rng.random() < 0.75 else rng.uniform(.5, 2.5)
                blk = _new_block(rng, s, x_of(outer + setback), z, z + length,
                                 float(np.clip(tall * rng.uniform(.6, 1.4), 5, 40)), normal)
                s.blocks.append(blk)
                if prev is None or prev[0] < z or prev[1] < blk.height or prev[2] != setback:
                    # the end wall facing the camera shows beside an alley, above a lower
                    # neighbour or where the building line steps
                    inner = outer + min(setback, prev[2] if prev else setback)
                    xa, xb = x_of(inner), x_of(outer + setback + 12.0)
                    s.blocks.append(replace(blk, x=z, z0=min(xa, xb), z1=max(xa, xb),
                                            cross=True, lit=_lit(s, 0)))
                prev = (z + length, blk.height, setback)
                z += length
            if kind == "verge":
                _row_of_trees(rng, s, x_of(curb + s.verge[i] / 2), 2, 90, (6, 12))
            elif rng.random() < 0.4:
                _row_of_trees(rng, s, x_of(curb + 0.8), 3, 90, (8, 15))
        else:  # park: grass, scattered trees, maybe a fence, a tree line or far buildings
            for _ in range(int(rng.integers(6, 22))):
                s.objects.append(_tree(rng, x_of(outer + rng.uniform(1.5, 30)), rng.uniform(3, 150)))
            if rng.random() < 0.5:
                s.fences.append(dict(x=x_of(outer + 0.1), z0=float(rng.uniform(-5, 10)),
                                     z1=float(rng.uniform(40, 200)), height=float(rng.uniform(.9, 1.4)),
                                     color=_jitter(rng, _choice(rng, [_c(.22, .24, .25), _c(.55, .40, .25), _c(.85, .85, .82)]), .05),
                                     spacing=float(rng.uniform(.12, .25)), bar=float(rng.uniform(.2, .45)),
                                     solid=bool(rng.random() < .3), lit=_lit(s, normal)))
            far = outer + rng.uniform(25, 60)
            if rng.random() < 0.6:
                s.treelines.append(dict(x=x_of(far), height=float(rng.uniform(6, 14)),
                                        phase=float(rng.uniform(0, 6)), color=_jitter(rng, _c(.16, .30, .12), .15),
                                        lit=_lit(s, normal)))
            else:
                z = rng.uniform(-20, 0)
                while z < 300:
                    length = rng.uniform(15, 40)
                    s.blocks.append(_new_block(rng, s, x_of(far), z, z + length,
                                               float(rng.uniform(6, 20)), normal))
                    z += length + rng.uniform(0, 15)
    if rng.random() < 0.35:  # the street ends at a building across it
        zend = rng.uniform(90, 250)
        x = -60.0
        while x < 60:
            width = rng.uniform(10, 25)
            blk = _new_block(rng, s, float(zend), x, x + width, float(rng.uniform(8, 30)), 0)
            blk.cross = True
            s.blocks.append(blk)
            x += width


def _tree(rng: np.random.Generator, x: float, z: float) -> _Object:
    if rng.random() < 0.3:
        return _Object("conifer", x, z, dict(
            height=float(rng.uniform(5, 12)), radius=float(rng.uniform(1.2, 2.5)),
            color=_jitter(rng, _c(.10, .24, .12), .2), phase=float(rng.uniform(0, 6))))
    rx = float(rng.uniform(1.3, 3.0))
    return _Object("tree", x, z, dict(
        rx=rx, ry=rx * float(rng.uniform(.9, 1.3)), trunk_h=float(rng.uniform(1.6, 3.2)),
        trunk_w=float(rng.uniform(.2, .4)),
        color=_jitter(rng, _choice(rng, [_c(.20, .38, .13), _c(.28, .45, .15), _c(.16, .32, .12), _c(.55, .45, .15)]), .12),
        phase=rng.uniform(0, 6, 3).astype(_F32)))


def _row_of_trees(rng, s: _Scene, x: float, z0: float, z1: float, gap: Tuple[float, float]) -> None:
    z = z0 + rng.uniform(0, gap[1])
    while z < z1:
        s.objects.append(_tree(rng, x + rng.uniform(-.2, .2), z))
        z += rng.uniform(*gap)


def _sample_traffic(rng: np.random.Generator, s: _Scene) -> None:
    def car(x: float, z: float, oncoming: bool) -> _Object:
        length = rng.uniform(3.9, 4.9)
        return _Object("car", x, z, dict(
            width=float(rng.uniform(1.65, 1.9)), length=float(length),
            body_h=float(rng.uniform(.85, 1.0)), roof_h=float(rng.uniform(1.35, 1.6)),
            color=_jitter(rng, _choice(rng, _CAR_COLORS), .06), oncoming=oncoming))

    for k in range(s.lanes):  # moving cars in each lane
        for direction in (1, -1):
            x = s.rc + direction * s.lane_w * (k + 0.5)
            z = rng.uniform(6, 25) + (6 if abs(x) < s.lane_w / 2 else 0)
            while z < 140:
                if rng.random() < 0.55:
                    s.objects.append(car(x + rng.uniform(-.3, .3), z, direction < 0))
                z += rng.uniform(9, 35)
    for i, side in enumerate((-1, 1)):
        if s.rw[i] > s.lanes * s.lane_w:  # parking lane
            x = s.rc + side * (s.rw[i] - 1.15)
            z = rng.uniform(2, 8)
            while z < 100:
                if rng.random() < 0.7:
                    s.objects.append(car(x + rng.uniform(-.15, .15), z, bool(rng.random() < .3)))
                z += rng.uniform(5.5, 9)
        curb = s.rc + side * (s.rw[i] + s.verge[i])
        walk = s.sidewalk[i]
        # people on the sidewalk
        for _ in range(int(rng.poisson(2.5))):
            s.objects.append(_person(rng, curb + side * rng.uniform(.3, walk - .3), rng.uniform(3, 60)))
        # street lights near the curb, sometimes with a sign
        if rng.random() < 0.75:
            z = rng.uniform(0, 15)
            gap = rng.uniform(18, 32)
            color = _choice(rng, [_c(.45, .46, .48), _c(.16, .24, .18), _c(.25, .25, .27)])
            while z < 160:
                s.objects.append(_Object("pole", curb + side * .4, z, dict(
                    height=float(rng.uniform(6, 8.5)), width=float(rng.uniform(.12, .2)),
                    arm=float(rng.uniform(.8, 2.2)), arm_dir=-side, color=color)))
                z += gap
        for _ in range(int(rng.integers(0, 3))):
            s.objects.append(_Object("sign", curb + side * rng.uniform(.3, .7), rng.uniform(4, 45), dict(
                height=float(rng.uniform(1.9, 2.5)), radius=float(rng.uniform(.28, .4)),
                shape=_choice(rng, ["prohibit", "mandatory", "warning", "info"]))))
    if s.crosswalk is not None:  # people crossing
        for _ in range(int(rng.integers(0, 3))):
            s.objects.append(_person(rng, s.rc + rng.uniform(-s.rw[0], s.rw[1]), s.crosswalk + rng.uniform(.5, 3.5)))


def _person(rng: np.random.Generator, x: float, z: float) -> _Object:
    return _Object("person", x, z, dict(
        height=float(rng.uniform(1.55, 1.92)), skin=_choice(rng, _SKIN), hair=_choice(rng, _HAIR),
        shirt=rng.uniform(.05, .9, 3).astype(_F32), pants=_jitter(rng, _choice(rng, [_c(.12, .14, .25), _c(.1, .1, .1), _c(.45, .40, .32), _c(.35, .35, .38)]), .1),
        stride=float(rng.uniform(0, .22)), sleeves=bool(rng.random() < .6)))


# ----------------------------------------------------------------------------- rendering
class _Renderer:
    """Draws one sampled scene at a given resolution into label/instance/depth/colour buffers."""

    def __init__(self, scene: _Scene, height: int, width: int, noise_rng: np.random.Generator) -> None:
        self.s = scene
        self.H, self.W = height, width
        size = max(height, width)
        self.f = scene.focal * size
        self.cx = width / 2.0
        self.cy = scene.horizon * height
        self.h = scene.cam_h
        self.c, self.sn = math.cos(scene.yaw), math.sin(scene.yaw)
        self.u = ((np.arange(width, dtype=_F32) + 0.5 - self.cx) / self.f).astype(_F32)
        self.v = ((np.arange(height, dtype=_F32) + 0.5 - self.cy) / self.f).astype(_F32)
        self.label = np.zeros((height, width), np.uint8)
        self.inst = np.zeros((height, width), np.int32)
        self.depth = np.full((height, width), np.inf, _F32)
        self.color = np.zeros((height, width, 3), _F32)
        self.fine = noise_rng.standard_normal((height, width), dtype=_F32)
        self.mid = _smooth_noise(noise_rng, height, width, max(1.0, size / 90))
        self.coarse = _smooth_noise(noise_rng, height, width, max(1.0, size / 14))
        self.counters = {c: 0 for c in THING_CLASSES}

    # -------------------------------------------------------------- geometry helpers
    def cam(self, x: float, z: float) -> Tuple[float, float]:
        """World (X, Z) -> camera (lateral, forward)."""
        return x * self.c - z * self.sn, x * self.sn + z * self.c

    def project(self, x: float, y: float, z: float) -> Tuple[float, float]:
        xc, zc = self.cam(x, z)
        return self.cx + self.f * xc / zc, self.cy + self.f * (self.h - y) / zc

    def bbox(self, pts: Sequence[Tuple[float, float]]) -> Optional[Tuple[slice, slice]]:
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        x0, x1 = max(0, int(math.floor(min(xs)))), min(self.W, int(math.ceil(max(xs))) + 1)
        y0, y1 = max(0, int(math.floor(min(ys)))), min(self.H, int(math.ceil(max(ys))) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def new_instance(self, cls: int) -> int:
        self.counters[cls] += 1
        return cls * 1000 + self.counters[cls]

    def paint(self, rs: slice, cs: slice, mask: np.ndarray, depth, cls, inst, color) -> None:
        """Z-buffered write of a surface into the region ``[rs, cs]``; ``depth``, ``cls``,
        ``inst`` and ``color`` are scalars / (3,) or arrays broadcastable to the region."""
        zb = self.depth[rs, cs]
        m = mask & (depth < zb)
        np.copyto(zb, depth, where=m)
        np.copyto(self.label[rs, cs], cls, where=m, casting="unsafe")
        np.copyto(self.inst[rs, cs], inst, where=m, casting="unsafe")
        np.copyto(self.color[rs, cs], color, where=m[..., None])

    def hidden(self, rs: slice, cs: slice, zc_min: float) -> bool:
        """True when everything already drawn in the region is nearer than ``zc_min``."""
        return bool(self.depth[rs, cs].max() < zc_min)

    def pixels_tall(self, x: float, z: float, height: float) -> float:
        """Projected height in pixels of something ``height`` metres tall standing at (x, z)."""
        zc = self.cam(x, z)[1]
        return self.f * height / zc if zc > 0 else 0.0

    # -------------------------------------------------------------- primitives
    def plane_x(self, xp: float, z0: float, z1: float, y0: float, y1: float,
                shade: Callable, cls, inst) -> None:
        """Vertical quad in the plane X = xp. ``shade(zw, y, zc, mask) -> (mask, color[, cls])``
        gets the along-plane coordinate ``zw (1, w)``, height ``y (h, w)``, depth ``zc (1, w)``."""
        zmin = (0.4 - xp * self.sn) / self.c  # stay in front of the camera
        z0 = max(z0, zmin)
        if z0 >= z1:
            return
        box = self.bbox([self.project(xp, y, z) for y in (y0, y1) for z in (z0, z1)])
        if box is None or self.hidden(*box, min(self.cam(xp, z0)[1], self.cam(xp, z1)[1])):
            return
        rs, cs = box
        u = self.u[cs][None, :]
        v = self.v[rs][:, None]
        den = u * self.c + self.sn
        with np.errstate(divide="ignore", invalid="ignore"):
            zc = np.where(den * xp > 0, xp / den, -1).astype(_F32)
        zw = zc * (self.c - u * self.sn)
        y = self.h - v * zc
        mask = (zc > 0.3) & (zw >= z0) & (zw <= z1) & (y >= y0) & (y <= y1)
        self._finish(rs, cs, mask, zw, y, zc, shade, cls, inst)

    def plane_z(self, zp: float, x0: float, x1: float, y0: float, y1: float,
                shade: Callable, cls, inst) -> None:
        """Vertical quad in the plane Z = zp facing the camera; ``zw`` is the world X."""
        if zp * self.c + x0 * self.sn < 0.4 or zp * self.c + x1 * self.sn < 0.4:
            return
        box = self.bbox([self.project(x, y, zp) for y in (y0, y1) for x in (x0, x1)])
        if box is None or self.hidden(*box, min(self.cam(x0, zp)[1], self.cam(x1, zp)[1])):
            return
        rs, cs = box
        u = self.u[cs][None, :]
        v = self.v[rs][:, None]
        zc = (zp / (self.c - u * self.sn)).astype(_F32)
        xw = zc * (u * self.c + self.sn)
        y = self.h - v * zc
        mask = (xw >= x0) & (xw <= x1) & (y >= y0) & (y <= y1)
        self._finish(rs, cs, mask, xw, y, zc, shade, cls, inst)

    def plane_y(self, yp: float, x0: float, x1: float, z0: float, z1: float,
                color: np.ndarray, cls, inst) -> None:
        """Horizontal quad at height yp (a roof or a bonnet seen from above)."""
        if yp >= self.h or min(self.cam(x, z0)[1] for x in (x0, x1)) < 0.4:
            return
        box = self.bbox([self.project(x, yp, z) for x in (x0, x1) for z in (z0, z1)])
        if box is None or self.hidden(*box, min(self.cam(x, z0)[1] for x in (x0, x1))):
            return
        rs, cs = box
        u = self.u[cs][None, :]
        v = self.v[rs][:, None]
        with np.errstate(divide="ignore"):
            zc = np.where(v > 0, (self.h - yp) / np.maximum(v, 1e-6), -1).astype(_F32)
        xw = zc * (u * self.c + self.sn)
        zw = zc * (self.c - u * self.sn)
        mask = (zc > 0) & (xw >= x0) & (xw <= x1) & (zw >= z0) & (zw <= z1)
        self.paint(rs, cs, mask, zc, cls, inst, color)

    def _finish(self, rs, cs, mask, a, y, zc, shade, cls, inst) -> None:
        if not mask.any():
            return
        out = shade(a, y, zc, mask)
        mask, color = out[0], out[1]
        if len(out) > 2:
            cls = out[2]
        self.paint(rs, cs, mask, zc, cls, inst, color)

    def billboard(self, x: float, z: float, half_w: float, top: float, shape: Callable,
                  cls, inst) -> None:
        """A flat cut-out facing the camera at the depth of its foot point (x, 0, z).
        ``shape(a (1, w), b (h, 1), rs, cs) -> (mask, color[, cls[, inst]])`` in metres."""
        xc, zc = self.cam(x, z)
        if zc < 1.0:
            return
        k = self.f / zc
        if top * k < 0.7:  # smaller than a pixel
            return
        xf, yf = self.cx + xc * k, self.cy + self.h * k
        box = self.bbox([(xf - half_w * k, yf - top * k), (xf + half_w * k, yf)])
        if box is None or self.hidden(*box, zc):
            return
        rs, cs = box
        a = ((np.arange(cs.start, cs.stop, dtype=_F32) + 0.5 - xf) / k)[None, :]
        b = ((yf - np.arange(rs.start, rs.stop, dtype=_F32) - 0.5) / k)[:, None]
        out = shape(a, b, rs, cs)
        mask, color = out[0], out[1]
        if len(out) > 2:
            cls = out[2]
        if len(out) > 3:
            inst = out[3]
        self.paint(rs, cs, mask, zc, cls, inst, color)

    # -------------------------------------------------------------- passes
    def render(self) -> Dict[str, np.ndarray]:
        self.draw_sky()
        self.draw_ground()
        for blk in self.s.blocks:
            self.draw_block(blk)
        for line in self.s.treelines:
            self.draw_treeline(line)
        for fence in self.s.fences:
            self.draw_fence(fence)
        # The z-buffer gives the same occlusion as painting far to near; drawing near to far
        # instead lets objects hidden behind nearer ones be skipped without shading them.
        objects = sorted(self.s.objects, key=lambda o: self.cam(o.x, o.z)[1])
        for obj in objects:
            getattr(self, "draw_" + obj.kind)(obj)
        return self.finish()

    def draw_sky(self) -> None:
        s = self.s
        t = np.clip(-self.v / 0.55, 0, 1)[:, None] ** 0.7                     # (H, 1)
        sky = s.sky_horizon * (1 - t[..., None]) + s.sky_top * t[..., None]   # (H, 1, 3)
        cloud = np.clip((self.coarse + 0.45 * self.mid) * 0.6 + (s.clouds - 0.6) * 1.5, 0, 1)
        cloud *= np.clip(t * 3, 0, 1) * min(1.0, s.clouds * 2)
        self.color[:] = sky * (1 - cloud[..., None]) + s.cloud_color * cloud[..., None]
        self.label[:] = SKY
        self.inst[:] = SKY

    def draw_ground(self) -> None:
        s = self.s
        r0 = int(np.searchsorted(self.v, 1e-4))
        if r0 >= self.H:
            return
        v = self.v[r0:][:, None]
        u = self.u[None, :]
        zc = (self.h / v).astype(_F32)                       # (h, 1) depth of each row
        X = zc * (u * self.c + self.sn)                      # (h, W)
        Z = zc * (self.c - u * self.sn)
        dX = X - s.rc
        right = dX >= 0
        ad = np.abs(dX)
        pick = lambda pair: np.where(right, _F32(pair[1]), _F32(pair[0]))  # noqa: E731
        rw = pick(s.rw)
        verge_end = rw + pick(s.verge)
        walk_end = verge_end + pick(s.sidewalk)
        cls = np.where(ad < rw, ROAD, np.where(ad < verge_end, GRASS, np.where(
            ad < walk_end, SIDEWALK, pick(s.beyond)))).astype(np.uint8)
        fp = zc / self.f                                      # metres per pixel across
        fpz = zc * zc / (self.f * self.h)                     # metres per pixel along the road
        fine, mid, coarse = self.fine[r0:], self.mid[r0:], self.coarse[r0:]
        detail = np.clip(3.0 / zc, 0.2, 1.0)
        # lane markings, in world units so they shrink with distance
        mark = self._markings(dX, Z, ad, rw, fp, right)
        cls[mark] = MARKING
        tex = np.ones_like(X)
        road = cls == ROAD
        tex = np.where(road, 1 + 0.07 * fine * detail + 0.07 * coarse, tex)
        # sidewalk tiles + a lighter curb
        ts = s.tile
        gx = _grid_line(dX / ts, fp / ts)
        gz = _grid_line(Z / ts, fpz / ts)
        walk = cls == SIDEWALK
        curb = walk & (ad < verge_end + 0.25)
        tex = np.where(walk, (1 - 0.22 * np.maximum(gx, gz)) * (1 + 0.04 * fine * detail + 0.04 * coarse), tex)
        tex = np.where(curb, 1.22, tex)
        grass = cls == GRASS
        stripes = np.where(np.sin(dX * (math.pi / 2.5)) > 0, 1.05, 0.95) if s.mow else 1.0
        tex = np.where(grass, (1 + 0.22 * fine * detail + 0.18 * mid + 0.1 * coarse) * stripes, tex)
        tex = np.where(cls == MARKING, 1 + 0.05 * fine, tex)
        table = np.stack([_c(0, 0, 0), s.road_color, s.sidewalk_color, s.grass_color]
                         + [_c(0, 0, 0)] * (MARKING - GRASS - 1) + [_c(.88, .88, .85)])
        col = table[cls] * tex[..., None]
        if s.center_line == "double_yellow":
            yellow = (cls == MARKING) & (ad < 0.4)
            col[yellow] = _c(.85, .70, .15)
        # shade cast by buildings on the sun's side across the street
        sh = pick(s.facade_shadow)
        shadow = (sh > 0) & (ad > walk_end - sh) & (ad < walk_end + 30)
        light = np.where(shadow, 1 - 0.75 * s.sun, 1.0).astype(_F32)
        light = light * self._object_shadows(X, Z)
        col *= light[..., None]
        self.label[r0:] = cls
        self.inst[r0:] = cls
        self.depth[r0:] = np.broadcast_to(zc, cls.shape)
        self.color[r0:] = col

    def _markings(self, dX, Z, ad, rw, fp, right) -> np.ndarray:
        s = self.s
        half = np.maximum(0.07, fp * 0.5)  # at least about a pixel wide
        period, duty = s.dash
        dashed = ((Z / period) % 1.0) < duty
        road = ad < rw
        mark = np.zeros(dX.shape, bool)
        if s.center_line == "dashed":
            mark |= (ad < half) & dashed
        elif s.center_line == "solid":
            mark |= ad < half
        elif s.center_line == "double_yellow":
            mark |= np.abs(ad - 0.15) < half
        for k in range(1, s.lanes):  # lane separators
            mark |= (np.abs(ad - k * s.lane_w) < half) & dashed
        if s.park_line:
            lanes_end = s.lanes * s.lane_w
            mark |= (np.abs(ad - lanes_end) < half) & (rw > lanes_end + 0.1)
        mark |= road & (ad > rw - 0.3) & (ad < rw - 0.3 + 2 * half) & (rw <= s.lanes * s.lane_w + 0.1)
        if s.crosswalk is not None:
            zebra = (Z > s.crosswalk) & (Z < s.crosswalk + 4) & (((dX / 1.0) % 1.0) < 0.5)
            mark |= road & zebra
        return mark & road

    def _object_shadows(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Ground darkening under cars and beside trees and people (shifted away from the sun)."""
        s = self.s
        light = np.ones(X.shape, _F32)
        r0 = self.H - X.shape[0]
        shift = -s.sun_side * 0.5
        for o in s.objects:
            if o.kind == "car":
                hw, hl = o.p["width"] / 2 + .15, o.p["length"] / 2 + .15
                cx, cz = o.x + shift * .6, o.z + o.p["length"] / 2
                strength = 0.45 + 0.2 * s.sun
            elif o.kind in ("tree", "conifer"):
                r = o.p.get("rx", o.p.get("radius", 1.5))
                hw = hl = r * 0.8
                cx, cz = o.x + shift * r * 2, o.z
                strength = 0.45 * s.sun + 0.1
            elif o.kind == "person":
                hw = hl = 0.35
                cx, cz = o.x + shift * 0.4, o.z
                strength = 0.4 * s.sun + 0.1
            else:
                continue
            if self.cam(cx, cz - hl)[1] < 0.5 or self.pixels_tall(cx, cz, 2 * hl) < 0.3:
                continue
            box = self.bbox([self.project(cx + dx, 0, cz + dz) for dx in (-hw, hw) for dz in (-hl, hl)])
            if box is None:
                continue
            rs, cs = box
            rs = slice(max(rs.start - r0, 0), max(rs.stop - r0, 0))
            if rs.start >= rs.stop:
                continue
            xx, zz = X[rs, cs], Z[rs, cs]
            if o.kind == "car":
                dist = np.maximum(np.abs(xx - cx) - (hw - .3), np.abs(zz - cz) - (hl - .3))
                fall = np.clip(dist / 0.3, 0, 1)
            else:
                fall = np.clip(np.sqrt(((xx - cx) / hw) ** 2 + ((zz - cz) / hl) ** 2), 0, 1) ** 2
            light[rs, cs] *= 1 - strength * (1 - fall)
        return light

    def draw_block(self, blk: _Block) -> None:
        shade = lambda a, y, zc, m: (m, self._facade(a, y, zc, blk))  # noqa: E731
        if blk.cross:
            self.plane_z(blk.x, blk.z0, blk.z1, 0.0, blk.height, shade, BUILDING, BUILDING)
        else:
            self.plane_x(blk.x, blk.z0, blk.z1, 0.0, blk.height, shade, BUILDING, BUILDING)

    def _facade(self, a: np.ndarray, y: np.ndarray, zc: np.ndarray, blk: _Block) -> np.ndarray:
        fp = zc / self.f
        ground = blk.floor_h * 1.15
        fy = (y - ground) / blk.floor_h
        fa = (a + blk.phase) / blk.win_sp
        ry, ra = fy - np.floor(fy), fa - np.floor(fa)
        vis = np.clip((blk.win_sp * 0.45 - fp) / (blk.win_sp * 0.2), 0, 1)  # windows fade far away
        win = (y > ground) & (y < blk.height - 0.8) & (np.abs(ry - 0.55) < blk.win_h / 2) & \
            (np.abs(ra - 0.5) < blk.win_w / 2)
        wall = np.ones_like(y)
        if blk.brick:
            by = y / 0.3
            row = np.floor(by)
            bx = a / 0.6 + 0.5 * (row % 2)
            mortar = ((by - row) < 0.15) | ((bx - np.floor(bx)) < 0.08)
            bvis = np.clip((0.3 - fp) / 0.15, 0, 1)
            wall = np.where(mortar, 1 - 0.25 * bvis, 1 + 0.04 * bvis)
        # a thin ledge at every floor and a darker cornice at the top
        ledge = (ry < 0.06) & (y > ground - 0.1)
        wall = np.where(ledge, wall * (1 - 0.15 * vis), wall)
        wall = np.where(y > blk.height - 0.5, wall * 0.8, wall)
        ao = 1 - 0.18 * np.exp(-np.maximum(y, 0) / 0.7)
        rnd = _hash2(np.floor(fy), np.floor(fa))
        color = blk.color * (wall * ao * blk.lit)[..., None]
        glass = blk.glass * (0.7 + 0.6 * rnd + 0.5 * (ry - 0.3))[..., None] + self.s.sky_horizon * 0.15
        if blk.shop:  # shop windows on the ground floor
            shop = (y > 0.5) & (y < ground - 0.6) & (np.abs(((a + blk.phase) / 4.0) % 1.0 - 0.5) < 0.38)
            win = win | shop
        color = np.where(win[..., None], glass * vis[..., None] + color * (1 - vis[..., None]), color)
        stains = np.sin(a * 3.1 + y * 1.7) * np.sin(a * 1.3 - y * 2.9)  # weathering
        return color * (1 + 0.03 * stains)[..., None]

    def draw_treeline(self, line: dict) -> None:
        def shade(a, y, zc, m):
            top = line["height"] + 2.2 * np.sin(a * 0.31 + line["phase"]) + 1.3 * np.sin(a * 0.83 + 2 * line["phase"]) \
                + 0.6 * np.sin(a * 2.3)
            mask = m & (y < top)
            light = 0.75 + 0.35 * np.clip(y / line["height"], 0, 1.2) + 0.12 * np.sin(a * 1.7) * np.sin(y * 1.9)
            return mask, line["color"] * (light * line["lit"])[..., None]
        inst = self.new_instance(TREE)
        self.plane_x(line["x"], -40.0, 400.0, 0.0, line["height"] + 4.5, shade, TREE, inst)

    def draw_fence(self, fence: dict) -> None:
        def shade(a, y, zc, m):
            fp = zc / self.f
            sp = fence["spacing"]
            bars = ((a / sp) % 1.0) < fence["bar"]
            rails = (y > fence["height"] - 0.08) | ((y > 0.12) & (y < 0.2))
            solid = fence["solid"] | (fp > sp * 0.6)  # far away the bars merge
            mask = m & (bars | rails | solid)
            light = fence["lit"] * (0.85 + 0.15 * (y / fence["height"]))
            light = np.where(bars & ~rails, light, light * 0.9)
            return mask, fence["color"] * light[..., None]
        self.plane_x(fence["x"], fence["z0"], fence["z1"], 0.0, fence["height"], shade, FENCE, FENCE)

    # -------------------------------------------------------------- objects
    def draw_tree(self, o: _Object) -> None:
        p = o.p
        rx, ry, th = p["rx"], p["ry"], p["trunk_h"]
        bc = th + ry * 0.85
        ph = p["phase"]
        trunk_col = _c(.33, .24, .16)
        leaf = p["color"]
        sun = self.s.sun_side * self.s.sun

        def shape(a, b, rs, cs):
            e = (a / rx) ** 2 + ((b - bc) / ry) ** 2
            wob = 0.16 * np.sin(5 * a / rx + ph[0]) * np.cos(4 * (b - bc) / ry + ph[1]) \
                + 0.08 * np.sin(11 * a / rx + 9 * (b - bc) / ry + ph[2])
            crown = e < 1 + wob
            trunk = (np.abs(a) < p["trunk_w"] / 2 * (1 + 0.3 * np.clip(1 - b, 0, 1))) & (b < bc)
            light = 0.65 + 0.3 * (b - bc) / ry + 0.5 * sun * a / rx
            clumps = 0.18 * np.sin(a * 4.1 + ph[1]) * np.sin(b * 3.7 + ph[2]) + 0.15 * self.mid[rs, cs]
            leaf_col = leaf * np.clip(light + clumps, 0.3, 1.4)[..., None]
            trunk_c = trunk_col * (0.8 + 0.4 * np.clip(sun * a / 0.2 + 0.5, 0, 1))[..., None]
            color = np.where(crown[..., None], leaf_col, trunk_c)
            return crown | trunk, color
        self.billboard(o.x, o.z, rx * 1.25 + .1, bc + ry * 1.25, shape, TREE, self.new_instance(TREE))

    def draw_conifer(self, o: _Object) -> None:
        p = o.p
        height, r = p["height"], p["radius"]
        base = height * 0.18
        sun = self.s.sun_side * self.s.sun

        def shape(a, b, rs, cs):
            rel = np.clip((height - b) / (height - base), 0, 1)
            jag = 1 + 0.18 * np.sin(b * 7 + p["phase"]) * np.sign(a)
            crown = (b > base) & (b < height) & (np.abs(a) < r * rel * jag)
            trunk = (np.abs(a) < 0.15) & (b <= base + 0.3)
            light = 0.7 + 0.45 * sun * a / r + 0.12 * np.sin(b * 4.3 + 2 * a) + 0.12 * self.mid[rs, cs]
            color = np.where(crown[..., None], p["color"] * np.clip(light, .3, 1.4)[..., None], _c(.3, .22, .15))
            return crown | trunk, color
        self.billboard(o.x, o.z, r * 1.3 + .1, height + .1, shape, TREE, self.new_instance(TREE))

    def draw_person(self, o: _Object) -> None:
        p = o.p
        H = p["height"]
        k = H / 1.75
        hr = 0.11 * k
        sun = self.s.sun_side * self.s.sun

        def shape(a, b, rs, cs):
            aa = np.abs(a)
            head = aa ** 2 + (b - (H - hr)) ** 2 < hr ** 2
            neck = (aa < 0.05 * k) & (b > 0.8 * H) & (b < H - hr)
            taper = 0.19 * k - 0.03 * k * np.clip((0.83 * H - b) / (0.33 * H), 0, 1)
            torso = (b > 0.5 * H) & (b < 0.83 * H) & (aa < taper)
            arms = (aa > 0.19 * k) & (aa < 0.265 * k) & (b > 0.47 * H) & (b < 0.81 * H)
            spread = p["stride"] * np.clip(0.5 * H - b, 0, None)
            legs = (b <= 0.5 * H) & (aa > 0.012 * k + spread) & (aa < 0.16 * k + spread)
            mask = head | neck | torso | arms | legs
            sleeve_end = (0.55 if p["sleeves"] else 0.72) * H  # long or short sleeves
            color = np.broadcast_to(p["pants"], mask.shape + (3,)).copy()
            color[torso | (arms & (b > sleeve_end))] = p["shirt"]
            color[arms & (b <= sleeve_end)] = p["skin"]
            color[head | neck] = p["skin"]
            color[head & (b > H - 0.75 * hr)] = p["hair"]
            color[legs & (b < 0.06 * k)] = _c(.07, .07, .07)
            light = 0.85 + 0.3 * sun * np.clip(a / (0.26 * k), -1, 1) + 0.05 * (b / H)
            return mask, color * light[..., None]
        self.billboard(o.x, o.z, 0.3 * k + 0.2 * p["stride"], H, shape, PERSON, self.new_instance(PERSON))

    def draw_pole(self, o: _Object) -> None:
        p = o.p
        H, w, arm, d = p["height"], p["width"], p["arm"], p["arm_dir"]
        sun = self.s.sun_side

        def shape(a, b, rs, cs):
            shaft = (np.abs(a) < w / 2 * (1 + 0.4 * (b < 0.4))) & (b < H)
            ad = a * d
            arm_m = (b > H - 0.12) & (b < H) & (ad >= 0) & (ad < arm)
            lamp = (b > H - 0.3) & (b < H - 0.05) & (ad > arm - 0.55) & (ad < arm)
            cyl = 0.75 + 0.35 * np.clip(0.5 + sun * a / max(w, 1e-3), 0, 1)
            color = p["color"] * cyl[..., None] * np.ones((1, 1, 3), _F32)
            color = np.where(lamp[..., None], _c(.85, .85, .80), color)
            return shaft | arm_m | lamp, color
        self.billboard(o.x, o.z, max(w, arm) + .2, H + .05, shape, POLE, self.new_instance(POLE))

    def draw_sign(self, o: _Object) -> None:
        p = o.p
        H, r, kind = p["height"], p["radius"], p["shape"]
        bc = H + r
        pole_inst, sign_inst = self.new_instance(POLE), self.new_instance(SIGN)

        def shape(a, b, rs, cs):
            pole = (np.abs(a) < 0.04) & (b < bc)
            rr = np.sqrt(a ** 2 + (b - bc) ** 2)
            if kind == "warning":
                inside = (b > bc - r) & (np.abs(a) < (bc + r - b) * 0.58)
                inner = (b > bc - r + 0.09) & (np.abs(a) < (bc + r - 0.16 - b) * 0.58)
                plate_col, inner_col = _c(.80, .10, .10), _c(.95, .95, .92)
            elif kind == "info":
                inside = (np.abs(a) < r) & (np.abs(b - bc) < r * 0.8)
                inner = (np.abs(a) < r - 0.05) & (np.abs(b - bc) < r * 0.8 - 0.05)
                plate_col, inner_col = _c(.92, .92, .92), _c(.10, .30, .70)
            elif kind == "mandatory":
                inside = rr < r
                inner = (rr < r * 0.45) & (rr > r * 0.3)
                plate_col, inner_col = _c(.10, .32, .72), _c(.95, .95, .95)
            else:
                inside = rr < r
                inner = rr < r * 0.75
                plate_col, inner_col = _c(.80, .08, .08), _c(.95, .95, .93)
            color = np.where(inner[..., None], inner_col, plate_col)
            color = np.where((pole & ~inside)[..., None], _c(.55, .56, .58), color)
            cls = np.where(inside, SIGN, POLE)
            inst = np.where(inside, sign_inst, pole_inst)
            return pole | inside, color, cls, inst
        self.billboard(o.x, o.z, r + .1, bc + r + .05, shape, SIGN, sign_inst)

    def draw_car(self, o: _Object) -> None:
        p = o.p
        s = self.s
        w, L, bh, rh = p["width"], p["length"], p["body_h"], p["roof_h"]
        inst = self.new_instance(CAR)  # numbered before culling: ids do not depend on the size
        size = self.pixels_tall(o.x, o.z, rh)
        if size < 0.7:  # smaller than a pixel: nothing to see
            return
        x0, x1 = o.x - w / 2, o.x + w / 2
        z0, z1 = o.z, o.z + L
        body = p["color"]
        glass_col = _c(.07, .09, .11) + s.sky_horizon * 0.12
        clear, wr = 0.24, 0.33
        oncoming = p["oncoming"]
        cz0, cz1 = (z0 + 0.3 * L, z1 - 0.22 * L) if oncoming else (z0 + 0.22 * L, z1 - 0.3 * L)
        wheels = (z0 + 0.75, z1 - 0.8)
        lights = _c(.95, .92, .75) if oncoming else _c(.75, .05, .05)

        def side(lit: float):
            def shade(a, y, zc, m):
                disc = np.zeros(m.shape, bool)
                hub = np.zeros(m.shape, bool)
                for wz in wheels:
                    d2 = (a - wz) ** 2 + (y - wr) ** 2
                    disc |= d2 < wr ** 2
                    hub |= d2 < (wr * 0.55) ** 2
                mask = m & ((y >= clear) | disc)
                grad = (0.8 + 0.35 * (y - clear) / (bh - clear))[..., None]
                color = body * grad * lit
                color = np.where(disc[..., None], np.where(hub[..., None], _c(.55, .55, .57), _c(.05, .05, .05)), color)
                trim = (y > clear) & (y < clear + 0.08)
                color = np.where((trim & ~disc)[..., None], body * 0.5 * lit, color)
                return mask, color
            return shade

        def rear(a, y, zc, m):
            hw = w / 2
            rel = np.abs(a - o.x)
            tyre = (y < clear) & (rel > hw - 0.3) & (rel < hw - 0.04)
            mask = m & ((y >= clear) | tyre)
            light_zone = (y > bh - 0.3) & (y < bh - 0.13) & (rel > hw - 0.36)
            plate = (rel < 0.26) & (y > 0.36) & (y < 0.48)
            bumper = (y > clear) & (y < clear + 0.14)
            color = body * ((0.85 + 0.3 * (y - clear) / (bh - clear)) * _lit(s, 0))[..., None]
            color = np.where(bumper[..., None], color * 0.6, color)
            color = np.where(light_zone[..., None], lights, color)
            color = np.where(plate[..., None], _c(.92, .92, .88), color)
            color = np.where(tyre[..., None], _c(.04, .04, .04), color)
            return mask, color

        def cabin_rear(a, y, zc, m):
            rel = np.abs(a - o.x)
            taper = (w / 2 - 0.12) - 0.18 * (y - bh) / (rh - bh)
            mask = m & (rel < taper)
            glass = (rel < taper - 0.08) & (y > bh + 0.06) & (y < rh - 0.06)
            color = np.where(glass[..., None], glass_col * (1.2 - 0.5 * (y - bh) / (rh - bh))[..., None] + 0.0,
                             body * _lit(s, 0))
            return mask, color

        def cabin_side(lit: float):
            def shade(a, y, zc, m):
                k = (y - bh) / (rh - bh)
                mask = m & (a > cz0 + 0.35 * k) & (a < cz1 - 0.45 * k)
                mid = (cz0 + cz1) / 2
                glass = (y > bh + 0.06) & (y < rh - 0.06) & (a > cz0 + 0.35 * k + 0.1) & \
                    (a < cz1 - 0.45 * k - 0.1) & (np.abs(a - mid) > 0.05)
                color = np.where(glass[..., None], glass_col * (1.25 - 0.4 * k)[..., None], body * lit)
                return mask, color
            return shade

        sides = []
        if x0 > 0:
            sides.append((x0, _lit(s, -1)))
        elif x1 < 0:
            sides.append((x1, _lit(s, 1)))
        top_col = np.clip(body * 1.05 + s.sky_horizon * 0.08, 0, 1)
        detailed = size > 6  # a few pixels tall: the rear view alone looks the same
        # lower body: top, side, rear; then the cabin
        if detailed:
            self.plane_y(bh, x0, x1, z0, z1, top_col, CAR, inst)
            for xs, lit in sides:
                self.plane_x(xs, z0, z1, 0.0, bh, side(lit), CAR, inst)
        self.plane_z(z0, x0, x1, 0.0, bh, rear, CAR, inst)
        if detailed:
            self.plane_y(rh, x0 + 0.2, x1 - 0.2, cz0 + 0.35, cz1 - 0.45, top_col, CAR, inst)
            for xs, lit in sides:
                inset = 0.12 if xs == x0 else -0.12
                self.plane_x(xs + inset, cz0, cz1, bh, rh, cabin_side(lit), CAR, inst)
        self.plane_z(cz0, x0, x1, bh, rh, cabin_rear, CAR, inst)

    # -------------------------------------------------------------- final image
    def finish(self) -> Dict[str, np.ndarray]:
        s = self.s
        finite = np.isfinite(self.depth)
        with np.errstate(invalid="ignore", over="ignore"):
            fog = np.where(finite, 1 - np.exp(-np.where(finite, self.depth, 0) / s.fog_dist), 0).astype(_F32)
        col = self.color * (1 - fog[..., None]) + s.sky_horizon * fog[..., None]
        col = col * s.exposure + 0.012 * self.fine[..., None]
        image = np.clip(col * 255 + 0.5, 0, 255).astype(np.uint8)
        return dict(label=self.label, instance=self.inst, depth=self.depth, image=image)


def _grid_line(t: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Tile grout lines at integer ``t``: 1 on a line (at least a pixel wide), fading out
    where the tiles get smaller than a few pixels."""
    width = np.maximum(0.04, fp)
    on = ((t % 1.0) < width).astype(_F32)
    return on * np.clip(1 - fp * 4, 0, 1)


def _hash2(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cheap deterministic pseudo-random value in [0, 1) per integer cell (i, j)."""
    x = np.sin(i * 12.9898 + j * 78.233) * 43758.5453
    return (x - np.floor(x)).astype(_F32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-ish variance noise that varies over about ``cell`` pixels: (H, W) float32."""
    gh, gw = max(2, int(math.ceil(height / cell)) + 1), max(2, int(math.ceil(width / cell)) + 1)
    small = rng.standard_normal((gh, gw)).astype(_F32)
    img = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    return np.asarray(img, dtype=_F32)


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) % (1 << 63), int(index) % (1 << 63), stream]))


def render_scene(index: int, seed: int, height: int, width: int) -> Dict[str, np.ndarray]:
    """Render scene ``index`` of the world seeded by ``seed`` at ``height x width`` pixels.

    Returns ``label (H, W) uint8`` class ids in ``[0, NUM_CLASSES)``, ``instance (H, W) int32``
    (class * 1000 + k for cars, people, trees, poles, signs; the class id elsewhere),
    ``depth (H, W) float32`` camera z-depth in metres (``inf`` for sky) and
    ``image (H, W, 3) uint8``. Deterministic per ``(seed, index)``; the scene layout does not
    depend on the resolution.
    """
    if height < 1 or width < 1:
        raise ValueError(f"render_scene needs a positive size, got {height}x{width}")
    scene = _sample_scene(_rng(seed, index, 0))
    return _Renderer(scene, int(height), int(width), _rng(seed, index, 1)).render()
