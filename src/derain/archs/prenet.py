"""PReNet and its family (Ren et al., CVPR 2019): one class for every official variant.

The official code has seven near-copies of one network; here they are constructor arguments
(csdwren/PReNet; see :data:`PRESETS`):

========================  ==================================================================
preset                    constructor arguments
========================  ==================================================================
``prenet``                LSTM, five residual blocks, output added to the rainy input
``prenet_r``              ``recursive=True``: one residual block applied five times
``prn`` / ``prn_r``       ``recurrent=None`` (no recurrence), plain / recursive
``prenet_lstm``           ``input_residual=False`` (direct clean estimate; the T=5/6/7 ablations)
``prenet_gru``            ``recurrent="gru"``, ``input_residual=False``
``prenet_x``              ``concat_input=False``, ``input_residual=False`` (stage sees x_{t-1} only)
``prenet_real``           ``recurrent_first=False``, ``stages=4``, ``input_residual=False``
                          (``Generator_lstm`` of the "real" checkpoints: residual blocks before the LSTM)
========================  ==================================================================

Input and output are RGB in [0, 1]. Module names reproduce the official state_dict keys.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain.archs.spec import Detected, Family, Preset, StateDict
from derain.types import DerainOutput


def _conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1)


def _gate_conv(weights: list[nn.Sequential], x: Tensor) -> list[Tensor]:
    """Apply several same-input gate convolutions as one convolution (same maths, fewer kernel launches)."""
    convs = [g[0] for g in weights]
    out = F.conv2d(x, torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs]), padding=1)
    return list(out.chunk(len(convs), dim=1))


class PReNet(nn.Module):
    """Progressive recurrent network; ``forward`` returns every stage's estimate."""

    def __init__(
        self,
        *,
        stages: int = 6,
        channels: int = 32,
        recurrent: Literal["lstm", "gru"] | None = "lstm",
        recursive: bool = False,
        input_residual: bool = True,
        concat_input: bool = True,
        recurrent_first: bool = True,
    ) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        if recurrent not in ("lstm", "gru", None):
            raise ValueError(f"recurrent must be 'lstm', 'gru' or None, got {recurrent!r}")
        if not recurrent_first and recurrent != "lstm":
            raise ValueError("recurrent_first=False (Generator_lstm) is defined only with recurrent='lstm'")
        self.stages = stages
        self.channels = channels
        self.recurrent = recurrent
        self.recursive = recursive
        self.input_residual = input_residual
        self.concat_input = concat_input
        self.recurrent_first = recurrent_first

        ch = channels
        self.conv0 = nn.Sequential(_conv(6 if concat_input else 3, ch), nn.ReLU())
        for k in range(1, 2 if recursive else 6):
            setattr(self, f"res_conv{k}", nn.Sequential(_conv(ch, ch), nn.ReLU(), _conv(ch, ch), nn.ReLU()))
        if recurrent == "lstm":
            self.conv_i = nn.Sequential(_conv(2 * ch, ch), nn.Sigmoid())
            self.conv_f = nn.Sequential(_conv(2 * ch, ch), nn.Sigmoid())
            self.conv_g = nn.Sequential(_conv(2 * ch, ch), nn.Tanh())
            self.conv_o = nn.Sequential(_conv(2 * ch, ch), nn.Sigmoid())
        elif recurrent == "gru":
            self.conv_z = nn.Sequential(_conv(2 * ch, ch), nn.Sigmoid())
            self.conv_b = nn.Sequential(_conv(2 * ch, ch), nn.Sigmoid())
            self.conv_g = nn.Sequential(_conv(2 * ch, ch), nn.Tanh())
        self.conv = nn.Sequential(_conv(ch, 3))

    def _res_blocks(self, x: Tensor) -> Tensor:
        # Each block is Sequential(conv, ReLU, conv, ReLU), applied with in-place ReLUs on the convolutions' fresh
        # outputs (a convolution's backward keeps its input, not its output): same values, fewer full-size buffers.
        fresh = not torch.is_grad_enabled()  # without autograd the residual sum may overwrite the block's output too
        for k in range(1, 6):
            block = self.res_conv1 if self.recursive else getattr(self, f"res_conv{k}")
            y = F.relu(block[2](F.relu(block[0](x), inplace=True)), inplace=True)
            x = F.relu(y.add_(x) if fresh else y + x, inplace=True)
        return x

    def _lstm(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = _gate_conv([self.conv_i, self.conv_f, self.conv_g, self.conv_o], torch.cat([x, h], 1))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def _gru(self, x: Tensor, h: Tensor) -> Tensor:
        z, b = _gate_conv([self.conv_z, self.conv_b], torch.cat([x, h], 1))
        z, b = torch.sigmoid(z), torch.sigmoid(b)
        g = self.conv_g(torch.cat([b * h, x], 1))
        return (1 - z) * h + z * g

    def forward(self, rainy: Tensor) -> DerainOutput:
        n, _, height, width = rainy.shape
        h = rainy.new_zeros(n, self.channels, height, width)
        c = torch.zeros_like(h)
        x = rainy
        outputs: list[Tensor] = []
        for _ in range(self.stages):
            a = F.relu(self.conv0[0](torch.cat([rainy, x], 1) if self.concat_input else x), inplace=True)
            if not self.recurrent_first:
                h, c = self._lstm(self._res_blocks(a), h, c)
                r = h
            elif self.recurrent == "lstm":
                h, c = self._lstm(a, h, c)
                r = self._res_blocks(h)
            elif self.recurrent == "gru":
                h = self._gru(a, h)
                r = self._res_blocks(h)
            else:
                r = self._res_blocks(a)
            x = self.conv(r)
            if self.input_residual:
                x = x + rainy
            outputs.append(x)
        return DerainOutput(image=outputs[-1], stages=tuple(outputs))


PRESETS: dict[str, dict[str, object]] = {
    "prenet": {},
    "prenet_r": {"recursive": True},
    "prn": {"recurrent": None},
    "prn_r": {"recurrent": None, "recursive": True},
    "prenet_lstm": {"input_residual": False},
    "prenet_gru": {"recurrent": "gru", "input_residual": False},
    "prenet_x": {"concat_input": False, "input_residual": False},
    "prenet_real": {"recurrent_first": False, "stages": 4, "input_residual": False},
}


def rain_features(x: Tensor) -> Tensor:
    """Nine numbers per image (N, 9) that tell light rain from heavy rain: the mean excess brightness of thin
    structures across rows (luminance less its opening by a 1x3, 1x7 and 1x15 row segment: rain streaks run
    down), the share of pixels whose 1x7 excess is over 0.05 and over 0.15, its 99th percentile, the mean and
    spread of the luminance, and the ratio of horizontal to vertical gradient energy."""
    y = x.mean(1, keepdim=True)

    def excess(k: int) -> Tensor:
        opened = F.max_pool2d(-F.max_pool2d(-y, (1, k), 1, (0, k // 2)), (1, k), 1, (0, k // 2))
        return (y - opened).flatten(1)

    e3, e7, e15 = excess(3), excess(7), excess(15)
    flat = y.flatten(1)
    spread = flat.std(1) if flat.shape[1] > 1 else flat.new_zeros(flat.shape[0])  # one pixel: no spread, no warning
    gx, gy = _gradient_energy(y)
    return torch.stack([e3.mean(1), e7.mean(1), e15.mean(1), (e7 > 0.05).float().mean(1),
                        (e7 > 0.15).float().mean(1), _quantile(e7, 0.99), flat.mean(1), spread,
                        gx / (gy + 1e-6)], dim=1)


def _gradient_energy(t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean absolute horizontal and vertical differences of (N, 1, H, W), each (N,); 0 along a side of one pixel
    (no neighbours: the mean of nothing would be NaN)."""
    n = t.shape[0]
    gx = (t[..., 1:] - t[..., :-1]).abs().flatten(1).mean(1) if t.shape[-1] > 1 else t.new_zeros(n)
    gy = (t[..., 1:, :] - t[..., :-1, :]).abs().flatten(1).mean(1) if t.shape[-2] > 1 else t.new_zeros(n)
    return gx, gy


def _quantile(t: Tensor, q: float) -> Tensor:
    """Per-row ``q`` quantile of (N, M); rows over 2^22 values use every k-th (torch.quantile stops at 2^24)."""
    step = -(-t.shape[1] // (1 << 22))
    return (t[:, ::step] if step > 1 else t).quantile(q, dim=1)


def residual_features(x: Tensor, out: Tensor) -> Tensor:
    """Seven numbers per image (N, 7) on what a network removed, ``r = x - out`` (the channel mean): its mean
    magnitude and mean, the share of pixels changed by over 0.02 and over 0.05, the 99th percentile of the
    magnitude, the share of the change that darkens (rain adds light), and the ratio of its horizontal to vertical
    gradient energy (streaks run down)."""
    r = (x.float() - out.float()).mean(1, keepdim=True)
    a = r.abs().flatten(1)
    gx, gy = _gradient_energy(r)
    return torch.stack([a.mean(1), r.flatten(1).mean(1), (a > 0.02).float().mean(1), (a > 0.05).float().mean(1),
                        _quantile(a, 0.99), r.clamp(min=0).flatten(1).sum(1) / (a.sum(1) + 1e-8),
                        gx / (gy + 1e-6)], dim=1)


def gate_features(x: Tensor, out: Tensor) -> Tensor:
    """(N, 16): :func:`rain_features` of the input and :func:`residual_features` of what was removed."""
    return torch.cat([rain_features(x.float()), residual_features(x, out)], dim=1)


GATE_OFF = 30.0  # a gate bias that makes every strength 1.0 in float32: weights without a gate run as they are


class LocalGate(nn.Module):
    """A per-pixel logit added to a pair's image-level gate, so that the share of the rain layer removed can vary
    across the image: where the network changed edges or texture that are not rain, less; where it removed streaks,
    more. A small dilated CNN (3x3 convolutions at dilations 1, 2 and 4, a 15x15 footprint) on the input less 0.5 and
    four times what the network removed, ``out - x``. Its last convolution starts at zero, so an untrained local
    gate is the image-level gate. Tall images are done in bands of rows with a halo of the footprint's radius, so
    the CNN's activations stay those of ``BAND`` rows and the result is the whole image's (up to float rounding)."""

    RADIUS = 7  # 1 + 2 + 4: the rows on each side a band needs to be exact
    BAND = 256

    def __init__(self, *, channels: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(6, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: Tensor, out: Tensor, *, banded: bool = True) -> Tensor:
        """(N, 1, H, W) logits for input ``x`` and network output ``out`` (N, 3, H, W)."""
        z = torch.cat([x - 0.5, 4 * (out - x)], dim=1)
        height = z.shape[-2]
        if not banded or height <= self.BAND + 2 * self.RADIUS:
            return self.body(z)
        bands = []
        for top in range(0, height, self.BAND):
            lo, hi = max(top - self.RADIUS, 0), min(top + self.BAND + self.RADIUS, height)
            piece = self.body(z[..., lo:hi, :])
            bands.append(piece[..., top - lo:top - lo + min(self.BAND, height - top), :])
        return torch.cat(bands, dim=-2)


class PReNetPair(nn.Module):
    """Two networks of one PReNet preset, one trained on light rain and one on heavy rain, and a linear classifier
    on :func:`rain_features` (fitted on synthetic light vs heavy rain, stored as buffers) that sends each image to
    one of them. ``forward(x, heavy=...)`` takes the choice from outside (the Restorer decides once on the whole
    image, so that tiles of one image never disagree); ``export_mode`` runs both and selects per image (no
    data-dependent branch in an exported graph).

    A gate (:meth:`strength`, buffers ``gate_*``) then decides how much of the rain layer to remove: a second
    classifier, on the input and on what the network removed, that leaves images alone where the network would
    not help (no rain, or rain it would only damage). With ``local_gate=True`` a :class:`LocalGate` adds a logit
    per pixel, so the share removed can differ across the image (:meth:`share`). The Restorer applies the gate to the
    whole image after tiling and scaling (:meth:`gated`); ``forward`` returns the networks' output untouched, except
    in ``export_mode``."""

    def __init__(self, *, stages: int = 6, channels: int = 32, recurrent: Literal["lstm", "gru"] | None = None,
                 recursive: bool = False, local_gate: bool = False) -> None:
        super().__init__()
        options = {"stages": stages, "channels": channels, "recurrent": recurrent, "recursive": recursive}
        self.light = PReNet(**options)
        self.heavy = PReNet(**options)
        self.local = LocalGate() if local_gate else None
        self.register_buffer("router_mean", torch.zeros(9))
        self.register_buffer("router_scale", torch.ones(9))
        self.register_buffer("router_weight", torch.zeros(9))
        self.register_buffer("router_bias", torch.zeros(1))
        self.register_buffer("gate_mean", torch.zeros(16))
        self.register_buffer("gate_scale", torch.ones(16))
        self.register_buffer("gate_weight", torch.zeros(16))
        self.register_buffer("gate_bias", torch.full((1,), GATE_OFF))
        self.export_mode = False

    def _load_from_state_dict(self, state_dict: StateDict, prefix: str, *args: object, **kwargs: object) -> None:
        # Pairs written before the gate (2026-12-06) have no gate_* keys: they load with the gate off.
        if prefix + "router_bias" in state_dict and prefix + "gate_bias" not in state_dict:
            for name in ("gate_mean", "gate_scale", "gate_weight", "gate_bias"):
                state_dict[prefix + name] = getattr(self, name).detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]

    def strength(self, x: Tensor, out: Tensor) -> Tensor:
        """(N,) the share of the rain layer to remove, 0 to 1: the gate's probability that the network's output
        ``out`` is closer to the clean image than the input ``x`` is (a logistic classifier on
        :func:`gate_features`, fitted on clean training photos with and without rain; see
        ``scripts/make_default.py``). Near 0 the image is left as it is: no rain, or rain this network would
        only damage. Weights without a gate give 1."""
        return torch.sigmoid(self.gate_logit(x, out))

    def gate_logit(self, x: Tensor, out: Tensor) -> Tensor:
        """(N,) the image-level gate's logit (:meth:`strength` is its sigmoid)."""
        z = (gate_features(x, out) - self.gate_mean.float()) / self.gate_scale.float()
        return z @ self.gate_weight.float() + self.gate_bias.float()

    def share(self, x: Tensor, out: Tensor) -> Tensor:
        """The share of the rain layer removed at each pixel, (N, 1, H, W), or (N, 1, 1, 1) without a local gate
        (:meth:`strength` everywhere). With one (``local_gate=True``): ``sigmoid`` of the image-level logit plus
        :class:`LocalGate`'s per-pixel logit."""
        logit = self.gate_logit(x, out).view(-1, 1, 1, 1)
        if self.local is not None:
            logit = logit + self.local(x.float(), out.float(), banded=not self.export_mode)
        return torch.sigmoid(logit)

    def gated(self, x: Tensor, out: Tensor) -> Tensor:
        """``out`` with only :meth:`share` of its rain layer removed (``out`` itself where the share is 1)."""
        s = self.share(x, out)
        if not self.export_mode and bool((s >= 1).all()):
            return out
        return x + s.to(x.dtype) * (out - x)

    def heavy_score(self, x: Tensor) -> Tensor:
        """(N,) logits: > 0 means heavy rain."""
        z = (rain_features(x.float()) - self.router_mean) / self.router_scale
        return z @ self.router_weight + self.router_bias

    def route(self, x: Tensor) -> Tensor:
        """(N,) booleans: which images go to the heavy-rain network."""
        return self.heavy_score(x) > 0

    def forward(self, rainy: Tensor, *, heavy: Tensor | None = None) -> DerainOutput:
        if heavy is None:
            heavy = self.route(rainy)
        if self.export_mode:
            a, b = self.light(rainy), self.heavy(rainy)
            w = heavy.to(rainy.dtype).view(-1, 1, 1, 1)
            stages = tuple(s_a + w * (s_b - s_a) for s_a, s_b in zip(a.stages, b.stages, strict=True))
            # the exported graph sees the whole image, so the gate is applied here (the Restorer applies it
            # after tiling and scaling otherwise)
            return DerainOutput(image=self.gated(rainy, stages[-1].clamp(0, 1)), stages=stages)
        if bool(heavy.all()):
            return self.heavy(rainy)
        if not bool(heavy.any()):
            return self.light(rainy)
        a, b = self.light(rainy[~heavy]), self.heavy(rainy[heavy])
        stages = []
        for s_a, s_b in zip(a.stages, b.stages, strict=True):
            s = rainy.new_empty(rainy.shape)
            s[~heavy], s[heavy] = s_a, s_b
            stages.append(s)
        return DerainOutput(image=stages[-1], stages=tuple(stages))


def _export_form(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, PReNetPair):
            module.export_mode = True  # both networks, then a per-image select: no data-dependent branch


_SUMMARIES = {
    "prenet": "PReNet (CVPR 2019): 6 stages, LSTM, 5 res blocks",
    "prenet_r": "PReNet_r: one recursive res block",
    "prn": "PRN: PReNet without recurrence",
    "prn_r": "PRN_r: PRN with one recursive res block",
    "prenet_lstm": "PReNet ablation: no input residual",
    "prenet_gru": "PReNet ablation: GRU recurrence",
    "prenet_x": "PReNet ablation: stage input x only",
    "prenet_real": "PReNet Generator_lstm (4 stages, real)",
}


def _detect(sd: StateDict) -> Detected | None:
    """The PReNet family's official layout: which of its nine variants, and its width."""
    w = sd.get("conv0.0.weight")
    if w is None or "conv.0.weight" not in sd or w.ndim != 4:
        return None
    channels = int(w.shape[0])
    options = {"channels": channels} if channels != 32 else {}
    recursive = "res_conv2.0.weight" not in sd
    if int(w.shape[1]) == 3:
        return Detected("prenet_x", options)
    if "conv_z.0.weight" in sd:
        return Detected("prenet_gru", options)
    if "conv_i.0.weight" in sd:
        # PReNet, the no-residual LSTM ablations and Generator_lstm share one key set; a file not in the
        # catalog is taken as the main model (the catalog's sha256 lookup names the others).
        return Detected("prenet_r" if recursive else "prenet", options)
    return Detected("prn_r" if recursive else "prn", options)


FAMILY = Family(
    name="prenet",
    presets=(*(Preset(name, PReNet, options, _SUMMARIES[name]) for name, options in PRESETS.items()),
             Preset("prn_pair", PReNetPair, {}, "two PRNs, light and heavy rain, each image routed by a rain-density "
                    "classifier (derain.default)")),
    overlap=64, bytes_per_pixel=2200.0,  # tiled = untiled within 2/255 at a 64-pixel overlap
    small={"stages": 2, "channels": 8},
    export_form=_export_form,
    detect=_detect, layout="conv0.0..., conv.0...",
)
