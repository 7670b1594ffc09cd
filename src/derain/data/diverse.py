"""The ``diverse`` rain style: rain drawn from a small physical model, so that no one renderer's look dominates.

Every number below comes from physics, the rain literature or the clean training photos (BSDS500, 481 x 321);
no test set's images or statistics were used (DESIGN.md rule 12). The ``light`` and ``heavy`` styles were fitted
to Rain100L/H; nothing here reuses their numbers.

Camera
    focal length ``f = 240.5 / tan(hfov / 2)`` pixels for the 481-pixel-wide training photos with a horizontal field
    of view of 40-75 degrees (normal lens to phone wide angle): 313-661 px, times ``scale`` for larger photos, so
    streaks keep the photo's scale in any crop. Exposure log-uniform in 1/250 - 1/25 s (stills under an overcast
    sky to video at 25-30 frames/s with an open shutter).
    Aperture diameter log-uniform in 1.5-10 mm (phone f/1.8 to a 50 mm lens at f/5), focus distance log-uniform
    in 2-50 m.
Drops
    Marshall & Palmer (1948): ``N(D) = 8000 exp(-L D)`` per m^3 per mm, ``L = 4.1 R^-0.21`` per mm, rain rate R
    log-uniform in 0.5-100 mm/h (light to violent rain, AMS glossary; 100 mm/h is a cloudburst's). Streak-casting
    drops are D >= 0.5 mm; each drop's size is drawn from that tail (so sizes, hence speeds and streak lengths, vary
    within a layer). Fall speed ``v = 9.65 - 10.3 exp(-0.6 D)`` m/s (Atlas et al. 1973, a fit to Gunn & Kinzer
    1949).
Streaks (Garg & Nayar 2004/2007, "Vision and rain")
    A drop at depth Z images to ``d = f D / Z`` px and falls ``f v T / Z`` px during the exposure (the streak's length).
    It covers a pixel for only part of the exposure, so a streak is an *opacity* ``alpha``: the drop's image area
    spread along its streak (``alpha ~ d / length``; ~d^2/length when sub-pixel), and the pixel becomes
    ``(1 - alpha) * background + alpha * E_drop``, a blend in linear light: a streak's brightness is relative to
    its background (strong on dark ground, faint on bright sky), with ``E_drop`` the drop's radiance, the average of
    a ~165 degree field of view that includes the sky (0.5-1 in linear light). A quarter of the images add the
    streaks instead (``background + alpha * E_drop``, the convention of the common renderers), so absolute
    brightness is also seen. Garg & Nayar's bound (a drop stays on a pixel at most ~1.2 ms) makes streaks lit only
    by the environment faint, as they are on a bright day; rain shows in photos when drops are lit (the sun or a
    lamp behind the rain, a flash): their specular and internal reflections (Garg & Nayar 2006) carry the light
    source's radiance, orders of magnitude above the environment's average. A per-layer lighting gain on alpha,
    log-uniform in 2-60 (8-60 for drizzle, invisible unless lit; 1-60 in the very light images, so from unlit,
    invisible drizzle up), stands for that. Its upper ends were checked by eye against real rainy photos
    (``docs/rain_styles.png``), nothing measured on them.
Depths
    Four slabs from 0.3 m to 15 m, log-spaced. Drops per image pixel in a slab [Z1, Z2] are
    ``n (Z2^3 - Z1^3) / (3 f^2)`` (the pixel's frustum), so near slabs are sparse and far ones dense; near drops are
    wide (``d`` large) and defocused (blur circle ``f A |1/Z - 1/Z_focus|``), far ones thin and sub-pixel. A near
    drop carries (Z_far / Z_near)^2 times a far one's light, so near streaks are the bright, wide ones; per pixel
    an in-focus streak's alpha (~ d / length) does not depend on Z, and defocus spreads it thinner.
    Rendering caps a layer's drop density at 0.05 per pixel (as many faint, thin streaks as a dense far slab
    shows); the rest of a far slab's drops (several sub-pixel ones per pixel) are left to the veil below, whose
    extinction already counts them. (Rendering them as an even film as well counted them twice and washed out a
    large share of the training crops.)
Wind
    A horizontal wind of N(0, 2) m/s per image, clipped to +-8 (near the ground, where photos are taken, winds in
    rain are mostly light to moderate: Beaufort 0-4), plus a gust of N(0, 1) m/s per layer; a streak's angle from
    vertical is ``atan(u / v)``, clipped to +-45 degrees: slow, small drops lean more, and the layers of one image
    can lean different ways.
Drizzle
    Drops of 0.1-0.5 mm (the AMS definition of drizzle) at 0.3-3 m, fall speed from the same law (0.5-2 m/s):
    short, thin, faint, leaning with the wind. In half the rainy images and alone in the very light ones.
Very light rain
    With probability 0.15 an image has drizzle only, at R = 0.05-0.5 mm/h, no veil and no splashes: the range down
    to nearly nothing that the do-no-harm training needs.
Accumulation veil
    Rain scatters like fog: extinction ``sigma ~ 0.3 R^0.65`` per km (the power laws of visibility in rain, e.g.
    Atlas 1953), transmission ``t = exp(-sigma Z)`` (Koschmieder), ``B' = t B + (1 - t) A`` in linear light with A
    (atmospheric light) U(0.6, 0.95). The scene depth Z runs from 5 m to Zmax, log-uniform 20-500 m (the clean
    training photos, BSDS500, are mostly people, animals, buildings and streets within a few hundred metres, few
    distant landscapes; a range to 2000 m left 7% of the images more than 90% veiled at their far end, washed-out
    crops with little left to recover; now 0.3%), along a monotone proxy from the photo: higher rows are farther
    (the ground-plane prior) mixed with the local dark channel (bright, colourless regions are far: He et al.
    2009). A crop sees a random slice of rows.
Splashes
    With probability 0.35, drops lit near a light source show as short, bright specks where the background is dark
    (weighted by (1 - luminance)^2): 2e-4 - 2e-3 per pixel, 1-4 px long.
Compression (the rainy input only; the clean target is untouched)
    None (35%), a JPEG round trip at quality 35-95 (45%: phones save at 85-95, the web re-compresses lower), or a
    video-like one at quality 10-30 with 4:2:0 chroma (20%: visible 8 x 8 blocking), on a random 8 x 8 grid offset
    since a crop does not start on the photo's block grid.

The shares (15% very light, 50% with drizzle, 35% with specks, 25% additive, the compression mix) are design
choices for coverage, not measurements of anything.

The ``downpour`` style (:func:`add_downpour_rain`; 2026-12-06, written before it was measured) is the same model
at the end that ``diverse`` rarely draws: heavy rain lit by a source. ``diverse`` draws each layer's lighting gain
on its own and its rain rate over four decades, so an image with a rain rate above 7.6 mm/h (41% of them) whose
four slabs are all lit (each in the upper half of the gain's range: one in 16) is one in ~40; a lit downpour,
the dense, bright, wide streaks of rain in front of the sun, a street lamp or a flash (Garg & Nayar 2006: a lit
drop carries the source's radiance), is then rare in training and absent from the validation suite. (A study on
training photos, docs/training.md stage 14, found that how brightly dense streaks are lit, not the veil, decides
which network restores them better.) Its draws:

Rain rate
    log-uniform 7.6-100 mm/h: the AMS glossary's "heavy rain" up to a cloudburst. No drizzle layer, no very
    light images.
Lighting
    one source per image. Backlit (half the images: the sun or a bright sky behind the rain, far away, so every
    slab is lit alike): each slab's gain log-uniform in the upper half, in log, of ``diverse``'s range, 11-60. A
    lamp (the other half: a street lamp or a flash at 0.5-5 m from the camera, log-uniform): a peak gain drawn in
    the same 11-60 for the slabs nearer than the lamp, falling with the inverse square of the distance beyond it
    (down to ``diverse``'s floor of 2, the environment's light), so near streaks are lit and far ones faint.
Rendering cap
    0.2 lit drops per pixel per layer instead of 0.05: lit far drops show as streaks rather than only as veil;
    at 0.2 drops per pixel, streaks of 10 px or longer already overlap on most pixels, and more adds only a film.
Additive
    half the images add the streaks (a lit drop's radiance is far above its background, where blending and
    adding nearly agree; the common renderers add).
Everything else
    camera, drop sizes and speeds, depths, wind, veil, specks and compression, as ``diverse``.

The 50/50 shares are coverage choices, not measurements. The 11-60 range, the lamp's distances and the cap are
not fitted to any image: the range is ``diverse``'s own (whose top was checked by eye against real rainy photos),
the distances those at which a lamp or a flash lights rain in a photo, the cap a geometric argument.

The ``downpour_varied`` style (:func:`add_downpour_rain` with ``varied=True``; 2026-12-07, stage 26, written
before it was measured) is ``downpour`` with two simplifications of its streaks undone, so that a heavy network
trained on it sees more than one streak shape per slab; every other draw is ``downpour``'s:

Each drop at its own depth
    ``downpour`` draws every drop of a slab at the slab's representative depth ``sqrt(Z1 Z2)``, so within a slab
    streak length varies only through drop size (fall speed). Here each drop's depth is drawn in its slab
    ``[Z1, Z2]`` with density proportional to ``Z^2`` (uniform in the pixel's viewing frustum: ``Z = (Z1^3 + u
    (Z2^3 - Z1^3))^(1/3)``), and its length ``f v T / Z`` and image size ``f D / Z`` follow: within one slab
    (a depth ratio of 2.7) streaks differ in length and brightness by that ratio, near drops of a slab long and
    bright, far ones short and faint. The slab's defocus and cross-section (``sigma``) stay the slab's.
Oscillating drops
    A falling drop oscillates (Garg & Nayar 2006, "Photorealistic rendering of rain streaks": the oscillations
    make a streak's brightness vary along its length). The fundamental (n = 2) mode of a drop of radius r has
    the frequency ``sqrt(8 s / (rho r^3)) / (2 pi)`` (Rayleigh; surface tension s = 0.0728 N/m, water's density
    rho = 1000 kg/m^3): about 120 Hz at D = 2 mm, 970 Hz at 0.5 mm. A streak records ``frequency x T`` cycles over
    its length; its opacity is multiplied by ``1 + a sin(2 pi cycles t + phase)`` along it (t from 0 to 1), with
    an amplitude a uniform in 0-0.6 per drop (a design choice for coverage: 0 is ``downpour``'s uniform streak;
    not measured on any image) and a uniform phase. Where a cycle is shorter than a pixel the pixel averages it
    out: the amplitude is multiplied by ``sinc(cycles / length)`` (zero at one cycle per pixel and beyond).

The ``downpour_near`` style (:func:`add_downpour_rain` with ``near=True``; 2026-12-07, stage 27, written before
it was measured) is ``downpour`` with the scene's farthest depth drawn log-uniform from 5 m (a close-up: the depth
proxy's near end) instead of 20 m, to the same 500 m; every other draw is ``downpour``'s. BSDS500 has many
close-ups (people, animals, objects a few metres away), whose veil is physically faint: 30% of the images are such
scenes, and the far end is veiled by under 10% in 45% of the plans (``downpour``: 21%), so dense rain also comes
with little veil.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from derain.data.synthetic import StreakParams, _gaussian_blur, _texture_layer, _uniform

GAMMA = 2.2  # sRGB <-> linear light, the usual approximation
VERY_LIGHT = 0.15  # share of images with drizzle only
DEPTHS = (0.3, 0.8, 2.1, 5.6, 15.0)  # slab bounds in metres (log-spaced)
MAX_ANGLE = 45.0
DENSITY_CAP = 0.05  # rendered drops per pixel in one layer (the rest are the veil's)
GAIN = (2.0, 60.0)  # lighting gain on a streak's opacity: from lit by the environment only to lit by a source
LIT = (math.sqrt(GAIN[0] * GAIN[1]), GAIN[1])  # downpour: the upper half (in log) of that range, 11-60
DOWNPOUR_RATE = (7.6, 100.0)  # mm/h: AMS "heavy rain" upwards, to a cloudburst
LAMP_DISTANCE = (0.5, 5.0)  # metres from the camera of the lamp (or flash) that lights a downpour
LIT_CAP = 0.2  # rendered lit drops per pixel in one layer: streaks of 10 px or more overlap on most pixels
SURFACE_TENSION = 0.0728  # N/m, water at 20 C: with its density, the drops' oscillation frequency (downpour_varied)
WATER_DENSITY = 1000.0  # kg/m^3
WOBBLE = 0.6  # downpour_varied: the largest amplitude of a streak's brightness oscillation (a coverage choice)
ZMAX = (20.0, 500.0)  # m: the scene's farthest depth, log-uniform (the veil's reach)
ZMAX_NEAR = (5.0, 500.0)  # downpour_near: from a close-up (5 m, the depth proxy's near end) to the same far end


@dataclass(frozen=True)
class Layer:
    """One slab of drops, as drawn for an image (lengths and widths in the image's pixels)."""

    depth: float          # metres, the slab's representative depth
    angle: float          # degrees from vertical, + leans right
    density: float        # drops per pixel (physical, before the rendering cap)
    sizes: tuple[float, float]  # drop diameter range in mm
    speed_px: float       # pixels per metre/second of fall speed: f T / Z
    drop_px: float        # pixels per mm of drop diameter: f / Z
    sigma: float          # Gaussian sigma of the streak's cross-section (drop size and defocus), px
    gain: float           # lighting gain on the opacity
    texture: bool = False  # drawn from a Garg & Nayar texture instead
    cap: float = DENSITY_CAP  # rendered drops per pixel at most (the rest are left to the veil)
    slab: tuple[float, float] | None = None  # (Z1, Z2) m: each drop at its own depth in it (None: all at `depth`)
    exposure: float = 0.0  # s; above 0, each streak's brightness oscillates with its drop (downpour_varied)


@dataclass(frozen=True)
class Plan:
    """Everything drawn for one image before its pixels: what the tests read."""

    rate: float           # mm/h
    very_light: bool
    layers: tuple[Layer, ...]
    veil: float           # extinction per metre (0: no veil)
    zmax: float           # farthest scene depth in metres
    light: float          # atmospheric light A (sRGB)
    drop: float           # drop radiance E (linear light)
    additive: bool        # streaks added instead of blended
    splashes: float       # specks per pixel (0: none)
    compression: str      # "none", "jpeg" or "video"
    quality: int
    lighting: str = "environment"  # diverse: per-layer gains; downpour: "backlit" or "lamp"


def fall_speed(d_mm: float | Tensor) -> float | Tensor:
    """Terminal fall speed (m/s) of a drop of diameter ``d_mm`` (Atlas et al. 1973)."""
    if isinstance(d_mm, Tensor):
        return (9.65 - 10.3 * torch.exp(-0.6 * d_mm)).clamp(min=0.3)
    return max(0.3, 9.65 - 10.3 * math.exp(-0.6 * d_mm))


def _log_uniform(g: torch.Generator, low: float, high: float) -> float:
    return math.exp(_uniform(g, math.log(low), math.log(high)))


def _normal(g: torch.Generator) -> float:
    return float(torch.randn((), generator=g))


@dataclass(frozen=True)
class _Camera:
    f: float              # focal length, px
    exposure: float       # s
    aperture: float       # m
    focus: float          # m
    scale: float


def _camera(g: torch.Generator, scale: float) -> _Camera:
    f = 240.5 / math.tan(math.radians(_uniform(g, 40.0, 75.0)) / 2) * scale
    exposure = _log_uniform(g, 1 / 250, 1 / 25)
    aperture = _log_uniform(g, 1.5e-3, 10e-3)
    return _Camera(f=f, exposure=exposure, aperture=aperture, focus=_log_uniform(g, 2.0, 50.0), scale=scale)


def _layer(cam: _Camera, g: torch.Generator, lam: float, wind: float, z1: float, z2: float, d_lo: float,
           d_hi: float, gain: tuple[float, float], tex: bool, cap: float = DENSITY_CAP, varied: bool = False) -> Layer:
    """The slab ``[z1, z2]`` m of drops of ``d_lo``-``d_hi`` mm: its density, streak geometry, a gust and a
    lighting gain drawn log-uniform in ``gain``; ``varied``: each drop at its own depth, oscillating (no draw
    here: the drops' own are made when the layer is rendered)."""
    f = cam.f
    n = 8000 / lam * (math.exp(-lam * d_lo) - math.exp(-lam * d_hi))  # drops per m^3 in [d_lo, d_hi]
    z = math.sqrt(z1 * z2)
    density = n * (z2 ** 3 - z1 ** 3) / (3 * f * f)
    d_typ = d_lo + 1 / lam if d_hi > 1 else (d_lo + d_hi) / 2
    speed = fall_speed(d_typ)
    angle = math.degrees(math.atan2(wind + _normal(g), speed))
    blur = f * cam.aperture * abs(1 / z - 1 / cam.focus) / 4  # std of the blur disc
    drop = f * d_typ * 1e-3 / z / 4
    sigma = min(math.sqrt(blur ** 2 + drop ** 2), 6.0 * cam.scale)
    return Layer(depth=z, angle=max(-MAX_ANGLE, min(MAX_ANGLE, angle)), density=density, sizes=(d_lo, d_hi),
                 speed_px=f * cam.exposure / z, drop_px=f / z * 1e-3, sigma=sigma,
                 gain=_log_uniform(g, *gain), texture=tex, cap=cap, slab=(z1, z2) if varied else None,
                 exposure=cam.exposure if varied else 0.0)


def _wind(g: torch.Generator) -> float:
    return max(-8.0, min(8.0, 2.0 * _normal(g)))


def _texture_slab(g: torch.Generator, textures: bool) -> int:
    """Which slab (1 or 2), if any (-1), is drawn from a Garg & Nayar texture: 30% of the images when given."""
    return int(torch.randint(1, 3, (), generator=g)) if textures and float(torch.rand((), generator=g)) < 0.3 else -1


def _finish(g: torch.Generator, scale: float, *, splash_chance: float, additive_share: float,
            zmax_range: tuple[float, float] = ZMAX) -> tuple[float, float, float, bool, str, int, float]:
    """The draws after the layers: the farthest depth (log-uniform in ``zmax_range``), atmospheric light, drop
    radiance, additive or blended, compression and its quality, specks per pixel."""
    zmax = _log_uniform(g, *zmax_range)
    light = _uniform(g, 0.6, 0.95)
    drop = _uniform(g, 0.5, 1.0)
    additive = float(torch.rand((), generator=g)) < additive_share
    splashes = 0.0
    if splash_chance and float(torch.rand((), generator=g)) < splash_chance:
        splashes = _log_uniform(g, 2e-4, 2e-3) / (scale * scale)
    u = float(torch.rand((), generator=g))
    compression, quality = ("none", 100) if u < 0.35 else ("jpeg", int(torch.randint(35, 96, (), generator=g))) \
        if u < 0.8 else ("video", int(torch.randint(10, 31, (), generator=g)))
    return zmax, light, drop, additive, compression, quality, splashes


def draw_plan(g: torch.Generator, scale: float = 1.0, *, textures: bool = False) -> Plan:
    """The image-level draws of the diverse style (see the module's docstring for each range's source)."""
    cam = _camera(g, scale)
    very_light = float(torch.rand((), generator=g)) < VERY_LIGHT
    rate = _log_uniform(g, 0.05, 0.5) if very_light else _log_uniform(g, 0.5, 100.0)
    lam = 4.1 * rate ** -0.21
    wind = _wind(g)
    layers = []
    if not very_light:
        tex_slab = _texture_slab(g, textures)
        for k in range(len(DEPTHS) - 1):
            layers.append(_layer(cam, g, lam, wind, DEPTHS[k], DEPTHS[k + 1], 0.5, 6.0, GAIN, k == tex_slab))
    if very_light or float(torch.rand((), generator=g)) < 0.5:
        layers.append(_layer(cam, g, lam, wind, 0.3, 3.0, 0.1, 0.5, (1.0 if very_light else 8.0, GAIN[1]), False))
    zmax, light, drop, additive, compression, quality, splashes = _finish(
        g, scale, splash_chance=0.0 if very_light else 0.35, additive_share=0.25)
    return Plan(rate=rate, very_light=very_light, layers=tuple(layers),
                veil=0.0 if very_light else 0.3 * rate ** 0.65 / 1000, zmax=zmax, light=light, drop=drop,
                additive=additive, splashes=splashes, compression=compression, quality=quality)


def draw_downpour_plan(g: torch.Generator, scale: float = 1.0, *, textures: bool = False,
                       varied: bool = False, near: bool = False) -> Plan:
    """The image-level draws of the downpour style: heavy rain lit by one source (see the module's docstring);
    ``varied``: the ``downpour_varied`` style (the same draws; its drops' depths and oscillations are drawn when
    the layers are rendered); ``near``: the ``downpour_near`` style (the scene's farthest depth from 5 m)."""
    cam = _camera(g, scale)
    rate = _log_uniform(g, *DOWNPOUR_RATE)
    lam = 4.1 * rate ** -0.21
    wind = _wind(g)
    tex_slab = _texture_slab(g, textures)
    backlit = float(torch.rand((), generator=g)) < 0.5
    lamp = _log_uniform(g, *LAMP_DISTANCE)
    peak = _log_uniform(g, *LIT)
    layers = []
    for k in range(len(DEPTHS) - 1):
        z1, z2 = DEPTHS[k], DEPTHS[k + 1]
        # backlit: every slab's gain drawn in the lit range; a lamp: its peak falls off with the slab's distance
        gain = LIT if backlit else (max(GAIN[0], peak * min(1.0, lamp * lamp / (z1 * z2))),) * 2
        layers.append(_layer(cam, g, lam, wind, z1, z2, 0.5, 6.0, gain, k == tex_slab, cap=LIT_CAP, varied=varied))
    zmax, light, drop, additive, compression, quality, splashes = _finish(
        g, scale, splash_chance=0.35, additive_share=0.5, zmax_range=ZMAX_NEAR if near else ZMAX)
    return Plan(rate=rate, very_light=False, layers=tuple(layers), veil=0.3 * rate ** 0.65 / 1000, zmax=zmax,
                light=light, drop=drop, additive=additive, splashes=splashes, compression=compression,
                quality=quality, lighting="backlit" if backlit else "lamp")


def oscillation_hz(d_mm: Tensor) -> Tensor:
    """The frequency (Hz) of the fundamental (n = 2) oscillation of a drop of diameter ``d_mm`` (Rayleigh)."""
    r = d_mm * 5e-4  # radius in m
    return torch.sqrt(8 * SURFACE_TENSION / (WATER_DENSITY * r ** 3)) / (2 * math.pi)


def _streaks(h: int, w: int, layer: Layer, lam: float, g: torch.Generator) -> Tensor:
    """The opacity ``(h, w)`` of one layer's streaks: drops of sizes drawn from the Marshall-Palmer tail, each a
    vertical streak as long as its fall in the exposure carrying the drop's image area, blurred, then rotated to
    the layer's angle (drawn in a frame that covers the image at any angle). With ``layer.slab`` each drop has its
    own depth in the slab, with ``layer.exposure`` its streak's brightness oscillates (``downpour_varied``)."""
    side = math.ceil(math.hypot(h, w)) + 2
    d_lo, d_hi = layer.sizes
    nearest = layer.depth / layer.slab[0] if layer.slab else 1.0  # the largest per-drop factor on length and size
    longest = max(1, math.ceil(float(fall_speed(d_hi)) * layer.speed_px * nearest))
    rows = side + longest
    rendered = min(layer.density, layer.cap)
    count = int(rendered * rows * side + float(torch.rand((), generator=g)))
    if count == 0:
        return torch.zeros(h, w)
    # drop diameters: the exponential tail of Marshall-Palmer above d_lo, truncated at d_hi
    u = torch.rand(count, generator=g)
    span = 1 - math.exp(-lam * (d_hi - d_lo))
    diam = d_lo - torch.log1p(-u * span) / lam
    y0 = torch.randint(0, rows, (count,), generator=g)
    x0 = torch.randint(0, side, (count,), generator=g)
    near = torch.ones(count)  # each drop's depth as a factor on the slab's: layer.depth / Z
    if layer.slab:
        z1, z2 = layer.slab
        near = layer.depth / (z1 ** 3 + torch.rand(count, generator=g) * (z2 ** 3 - z1 ** 3)) ** (1 / 3)
    length = (fall_speed(diam) * layer.speed_px * near).clamp(min=1.0)
    size = diam * layer.drop_px * near  # drop image diameter, px
    area = math.pi / 4 * size * size * layer.gain  # px^2 (lit); spread along the streak, the blur spreads it across
    opacity = area / length
    steps = length.round().long().clamp(min=1, max=longest)
    # each drop writes `steps` pixels upwards from (y0, x0)
    total = int(steps.sum())
    drop_of = torch.repeat_interleave(torch.arange(count), steps, output_size=total)
    offset = torch.arange(total) - torch.repeat_interleave(steps.cumsum(0) - steps, steps, output_size=total)
    yy = y0[drop_of] - offset
    value = opacity[drop_of]
    if layer.exposure > 0:
        cycles = oscillation_hz(diam) * layer.exposure
        amplitude = WOBBLE * torch.rand(count, generator=g) * torch.sinc((cycles / steps).clamp(max=1.0))
        phase = 2 * math.pi * torch.rand(count, generator=g)
        along = (offset + 0.5) / steps[drop_of]
        value = value * (1 + amplitude[drop_of] * torch.sin(2 * math.pi * cycles[drop_of] * along + phase[drop_of]))
    keep = yy >= 0
    frame = torch.zeros(rows * side)
    frame.index_add_(0, (yy[keep] * side + x0[drop_of][keep]), value[keep])
    frame = frame.view(1, 1, rows, side)[..., longest:, :]
    frame = _gaussian_blur(frame, layer.sigma) if layer.sigma >= 0.3 else frame
    return _rotate(frame, h, w, layer.angle)


def _rotate(frame: Tensor, h: int, w: int, angle: float) -> Tensor:
    side = frame.shape[-1]
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    sx, sy = w / side, h / side
    theta = torch.tensor([[[c * sx, -s * sy, 0.0], [s * sx, c * sy, 0.0]]])
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    return F.grid_sample(frame, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]


def depth_proxy(clean: Tensor, g: torch.Generator, scale: float = 1.0) -> Tensor:
    """A monotone stand-in for scene depth ``(H, W)`` in [0, 1] (1 = far): higher rows are farther, mixed with the
    blurred dark channel (bright, colourless regions are far). A crop gets a random slice of the row ramp."""
    h, w = clean.shape[-2:]
    top = _uniform(g, 0.4, 1.0)
    bottom = top - _uniform(g, 0.1, top)
    rows = torch.linspace(top, bottom, h)[:, None].expand(h, w)
    dark = clean.amin(0)[None, None]
    k = max(3, round(15 * scale)) | 1
    dark = F.avg_pool2d(F.pad(dark, (k // 2,) * 4, mode="replicate"), k, stride=1)[0, 0]
    mix = _uniform(g, 0.5, 0.8)
    return (mix * rows + (1 - mix) * dark).clamp(0, 1)


def _compress(x: Tensor, plan: Plan, g: torch.Generator) -> Tensor:
    """A JPEG round trip of ``(3, H, W)`` in [0, 1] (Pillow), its 8 x 8 grid at a random offset."""
    if plan.compression == "none":
        return x
    dy, dx = (int(v) for v in torch.randint(0, 8, (2,), generator=g))
    h, w = x.shape[-2:]
    padded = F.pad(x[None], (dx, 0, dy, 0), mode="replicate")[0] if dy or dx else x
    array = (padded.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=plan.quality,
                                subsampling=2 if plan.compression == "video" else 0)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    out = torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255
    return out[:, dy:dy + h, dx:dx + w].contiguous()


def add_downpour_rain(clean: Tensor, g: torch.Generator, textures: Sequence[Tensor] = (), *,
                      mask_threshold: float = 0.05, scale: float = 1.0, varied: bool = False,
                      near: bool = False) -> tuple[Tensor, Tensor]:
    """Downpour rain on a clean ``(3, H, W)`` image in [0, 1]: ``(rainy, mask)``, as :func:`add_diverse_rain`;
    ``varied``: the ``downpour_varied`` style, ``near``: ``downpour_near`` (:func:`draw_downpour_plan`)."""
    plan = draw_downpour_plan(g, scale, textures=bool(textures), varied=varied, near=near)
    return add_diverse_rain(clean, g, textures, mask_threshold=mask_threshold, scale=scale, plan=plan)


def add_diverse_rain(clean: Tensor, g: torch.Generator, textures: Sequence[Tensor] = (), *,
                     mask_threshold: float = 0.05, scale: float = 1.0,
                     plan: Plan | None = None) -> tuple[Tensor, Tensor]:
    """Diverse rain on a clean ``(3, H, W)`` image in [0, 1]: ``(rainy, mask)``; the mask marks where streaks and
    specks change the (veiled) background by more than ``mask_threshold``,
    before compression."""
    if plan is None:
        plan = draw_plan(g, scale, textures=bool(textures))
    h, w = clean.shape[-2:]
    lam = 4.1 * plan.rate ** -0.21
    clean = clean.float()
    # opacity of all layers: 1 - prod(1 - alpha_k)
    clear = torch.ones(h, w)
    for layer in plan.layers:
        if layer.texture:
            pick = int(torch.randint(0, len(textures), (), generator=g))
            # the textures' streaks peak near 1: scaled to the opacity of a lit procedural streak (~0.01 x gain)
            p = StreakParams(density=(0, 0), length=(1, 1), width=(0, 0), gain=(0.01 * layer.gain, 0.02 * layer.gain),
                             spread=0)
            alpha = _texture_layer(h, w, layer.angle, textures[pick], p, g, scale)
        else:
            alpha = _streaks(h, w, layer, lam, g)
        clear = clear * (1 - alpha.clamp(0, 0.95))
    alpha = 1 - clear
    linear = clean ** GAMMA
    if plan.veil > 0:
        depth = 5.0 * (plan.zmax / 5.0) ** depth_proxy(clean, g, scale)
        t = torch.exp(-plan.veil * depth)
        linear = linear * t + (1 - t) * plan.light ** GAMMA
    rain = linear + alpha * plan.drop if plan.additive else linear * (1 - alpha) + alpha * plan.drop
    background = linear.clamp(0, 1) ** (1 / GAMMA)  # what the mask compares with: the veil is not streaks
    rainy = rain.clamp(0, 1) ** (1 / GAMMA)
    if plan.splashes > 0:
        speck = _streaks(h, w, Layer(depth=1.0, angle=_uniform(g, -MAX_ANGLE, MAX_ANGLE), density=plan.splashes,
                                     sizes=(3.0, 3.0), speed_px=_uniform(g, 0.1, 0.5) * scale,
                                     drop_px=1.0 * scale, sigma=_uniform(g, 0.5, 1.2) * scale, gain=1.0), 1.0, g)
        speck = (speck / speck.amax().clamp(min=1e-6)) * _uniform(g, 0.4, 1.0) if speck.amax() > 0 else speck
        luma = (0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2])
        rainy = rainy + speck * (1 - luma) ** 2
    rainy = rainy.clamp(0, 1)
    mask = ((rainy - background).abs().amax(0, keepdim=True) > mask_threshold).float()
    return _compress(rainy, plan, g), mask
