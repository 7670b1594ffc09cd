"""PSNR and SSIM with an explicit data range, plus the evaluation protocols of the official repositories.

Images are float NCHW tensors. :func:`psnr` and :func:`ssim` are plain differentiable functions (``ssim``
keeps the input dtype, so training losses can use it in float32); :func:`measure` applies one named protocol
from :data:`PROTOCOLS` exactly as an official repository scores its results (each protocol's description
says which repository and how; the documentation's evaluation page explains why they differ), in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from derain.errors import InputError

QuantizeMode = Literal["floor", "round"]
QUANTIZE_MODES: tuple[str, ...] = get_args(QuantizeMode)

# MATLAB rgb2ycbcr on doubles: Y = T(1,:)/255 * [R; G; B] + 16/255 with T(1,:) = [65.481 128.553 24.966].
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0 / 255.0


def _check_tensor(t: object, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise InputError(f"{name} has dtype {t.dtype}; expected a float tensor (divide 8-bit data by 255)")
    if t.ndim != 4:
        raise InputError(
            f"{name} has shape {tuple(t.shape)}; expected (N, C, H, W) (add a batch dim: x[None])"
        )
    return t


def _check_pair(x: object, y: object) -> None:
    x, y = _check_tensor(x, "x"), _check_tensor(y, "y")
    if x.shape != y.shape:
        raise InputError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}; they must be equal")
    if x.dtype != y.dtype:
        raise InputError(f"dtypes differ: {x.dtype} vs {y.dtype} (shape {tuple(x.shape)}); convert one")
    if x.device != y.device:
        raise InputError(f"devices differ: {x.device} vs {y.device}")


def rgb_to_y(x: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) luma as MATLAB ``rgb2ycbcr`` on doubles (not rounded)."""
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"rgb_to_y expects an (N, 3, H, W) RGB tensor, got {shape}")
    return _luma(x, 1.0)


def _luma(x: Tensor, data_range: float) -> Tensor:
    """rgb_to_y for RGB in [0, data_range]: the 16/255 offset scales with the range."""
    if x.shape[1] != 3:
        raise InputError(f"y_channel=True needs (N, 3, H, W) RGB images, got shape {tuple(x.shape)}")
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b + _Y_OFFSET * data_range


def quantize(x: Tensor, mode: QuantizeMode | None) -> Tensor:
    """Clamp to [0, 1] and snap to the 8-bit grid as the official repositories save images; None = identity.

    ``255 * x`` is computed in x's own dtype, as the repos do on their float32 outputs.
    floor: ``np.uint8(255 * x)`` truncation (PReNet). The clamp comes first, so truncation is a floor.
    round: ``cv2.imwrite`` of a float array (SIAN, JDNet's show.py) converts with ``saturate_cast<uchar>``,
    which rounds with cvRound, i.e. the FPU's round-to-nearest-even (lrint / SSE2 cvtsd2si / v_round), then
    saturates. So ties go to the even integer (127.5 -> 128, 128.5 -> 128), as ``torch.round`` does;
    clamping before rounding gives the same result as saturating after it.
    """
    if mode is None:
        return x
    if mode not in ("floor", "round"):
        raise InputError(f"unknown quantize mode {mode!r}; expected 'floor', 'round' or None")
    scaled = x.clamp(0.0, 1.0) * 255.0
    snapped = torch.floor(scaled) if mode == "floor" else torch.round(scaled)
    return snapped / 255.0


# `measure` has a parameter named `quantize`; it calls the function through this name.
_quantize = quantize


def psnr(x: Tensor, y: Tensor, *, data_range: float, y_channel: bool = False, border: int = 0) -> Tensor:
    """Per-image PSNR in dB, shape (N,), float64 (computed in float64). Identical images give +inf.

    y_channel: compare MATLAB luma (:func:`rgb_to_y`, images in [0, data_range]) instead of all channels.
    border: pixels removed from each side of both images before the mean squared error.
    """
    _check_pair(x, y)
    if not data_range > 0:
        raise InputError(f"data_range must be positive, got {data_range}")
    x, y = x.to(torch.float64), y.to(torch.float64)
    if y_channel:
        x, y = _luma(x, data_range), _luma(y, data_range)
    x, y = _crop(x, border), _crop(y, border)
    mse = (x - y).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _crop(x: Tensor, border: int) -> Tensor:
    if border < 0:
        raise InputError(f"border must be >= 0, got {border}")
    if border == 0:
        return x
    h, w = x.shape[-2:]
    if 2 * border >= min(h, w):
        raise InputError(f"border {border} leaves nothing of a {h}x{w} image (or SSIM map)")
    return x[..., border : h - border, border : w - border]


def _window_1d(kind: str, size: int, sigma: float, like: Tensor) -> Tensor:
    if kind == "uniform":
        return torch.full((size,), 1.0 / size, dtype=like.dtype, device=like.device)
    if kind == "gaussian":
        # fspecial('gaussian', size, sigma) is the outer product of this normalised 1-D kernel with itself.
        r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(r * r) / (2.0 * sigma * sigma))
        return (g / g.sum()).to(dtype=like.dtype, device=like.device)
    raise InputError(f"unknown window {kind!r}; expected 'gaussian' or 'uniform'")


def _symmetric_index(n: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices of MATLAB 'symmetric' padding (mirror that repeats the edge sample)."""
    i = torch.arange(-before, n + after, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _downsample(x: Tensor) -> Tensor:
    """Wang's ssim.m step: f = max(1, round(min(M, N) / 256)); f x f mean filter
    (imfilter 'symmetric', 'same'), then every f-th sample starting from the first."""
    h, w = x.shape[-2:]
    f = max(1, math.floor(min(h, w) / 256 + 0.5))  # MATLAB round: half away from zero (positive here)
    if f == 1:
        return x
    # imfilter puts the kernel centre at floor((f + 1) / 2) (1-based), so out(i) averages
    # in(i - b .. i - b + f - 1) with b = floor((f - 1) / 2): in(i .. i + 1) for f = 2.
    before = (f - 1) // 2
    after = f - 1 - before
    x = x.index_select(-2, _symmetric_index(h, before, after, x.device))
    x = x.index_select(-1, _symmetric_index(w, before, after, x.device))
    # box filter then subsampling from the first pixel == non-overlapping f x f means of the padded image.
    return F.avg_pool2d(x, kernel_size=f, stride=f)


def ssim(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float,
    y_channel: bool = False,
    window: Literal["gaussian", "uniform"] = "gaussian",
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: Literal["valid", "same"] = "valid",
    sample_covariance: bool = False,
    border: int = 0,
    downsample: bool = False,
) -> Tensor:
    """Per-image SSIM, shape (N,): mean of the SSIM map over channels and positions. Differentiable; keeps the
    input dtype and device.

    y_channel: compare MATLAB luma of RGB images in [0, data_range] (offset 16/255 * data_range).

    padding: 'valid' = only windows inside the image (MATLAB ``filter2(..., 'valid')``); 'same' = zero padding
    of window_size // 2 (the PyTorch SSIM.py of PReNet/SIAN/JDNet).
    sample_covariance: scale (co)variances by n/(n-1), n = window_size**2 (old skimage ``compare_ssim``).
    border: entries removed from each side of the SSIM map before the mean (skimage crops (window_size-1)//2).
    downsample: Wang's ssim.m automatic down-sampling before filtering (PReNet's ssim.m).
    """
    _check_pair(x, y)
    if not data_range > 0:
        raise InputError(f"data_range must be positive, got {data_range}")
    if not (isinstance(window_size, int) and window_size >= 1 and window_size % 2 == 1):
        raise InputError(f"window_size must be a positive odd integer, got {window_size!r}")
    if padding not in ("valid", "same"):
        raise InputError(f"unknown padding {padding!r}; expected 'valid' or 'same'")
    if y_channel:
        x, y = _luma(x, data_range), _luma(y, data_range)
    if downsample:
        x, y = _downsample(x), _downsample(y)
    h, w = x.shape[-2:]
    if padding == "valid" and min(h, w) < window_size:
        raise InputError(f"image {h}x{w} is smaller than the {window_size}x{window_size} window ('valid')")

    c = x.shape[1]
    g = _window_1d(window, window_size, sigma, x)
    pad = window_size // 2 if padding == "same" else 0
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5C, H, W): one depthwise, separable filter
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(5 * c, 1, -1, 1), padding=(pad, 0), groups=5 * c)
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(5 * c, 1, 1, -1), padding=(0, pad), groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.split(c, dim=1)

    norm = window_size**2 / (window_size**2 - 1) if sample_covariance and window_size > 1 else 1.0
    var_x = norm * (e_xx - mu_x * mu_x)
    var_y = norm * (e_yy - mu_y * mu_y)
    cov = norm * (e_xy - mu_x * mu_y)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return _crop(num / den, border).flatten(1).mean(dim=1)


@dataclass(frozen=True)
class Protocol:
    """How one official repository turns (output, target) into PSNR/SSIM: channels, 8-bit conversion, SSIM window."""

    description: str
    y_channel: bool
    clip_target: bool  # the repo clips the ground truth to [0, 1] (for PSNR; for SSIM too if ssim_clipped)
    quantize: QuantizeMode | None  # default 8-bit conversion of the output; None = the repo never quantises
    ssim_clipped: bool  # SSIM on the images PSNR sees, or on the raw output and target
    ssim_scale: float  # images are multiplied by this before SSIM
    ssim_data_range: float
    window: Literal["gaussian", "uniform"]
    window_size: int
    padding: Literal["valid", "same"]
    sample_covariance: bool
    can_downsample: bool

    @property
    def quantizes(self) -> bool:
        """Whether the protocol scores 8-bit outputs (accepts a ``quantize`` option)."""
        return self.quantize is not None


PROTOCOLS: dict[str, Protocol] = {
    "matlab-y": Protocol(
        description="PReNet/SIAN MATLAB scripts: 8-bit output, rgb2ycbcr Y, psnr.m peak 1, ssim.m on Y*255",
        y_channel=True, clip_target=False, quantize="round", ssim_clipped=True, ssim_scale=255.0,
        ssim_data_range=255.0, window="gaussian", window_size=11, padding="valid", sample_covariance=False,
        can_downsample=True,
    ),
    "torch-rgb": Protocol(
        description="JDNet eval.py: RGB PSNR of clipped floats; PyTorch SSIM (zero-padded) on the raw output",
        y_channel=False, clip_target=True, quantize=None, ssim_clipped=False, ssim_scale=1.0,
        ssim_data_range=1.0, window="gaussian", window_size=11, padding="same", sample_covariance=False,
        can_downsample=False,
    ),
    "skimage-legacy": Protocol(
        description="SPANet: skimage compare_psnr (range 1) / compare_ssim defaults (7x7 uniform, range 2)",
        y_channel=False, clip_target=True, quantize=None, ssim_clipped=True, ssim_scale=1.0,
        ssim_data_range=2.0, window="uniform", window_size=7, padding="valid", sample_covariance=True,
        can_downsample=False,
    ),
}


def protocol_names() -> list[str]:
    """The valid names for :func:`measure`'s ``protocol``."""
    return list(PROTOCOLS)


class _Default:
    def __repr__(self) -> str:
        return "<protocol default>"


PROTOCOL_DEFAULT = _Default()


def check_protocol(protocol: str, *, quantize: QuantizeMode | _Default | None = PROTOCOL_DEFAULT,
                   downsample: bool = False) -> Protocol:
    """The protocol called ``protocol``, after checking that ``quantize`` and ``downsample`` apply to it: the one
    place a protocol and its options are validated (:func:`measure`, :func:`derain.evaluate` and ``derain eval``
    all come here, the last two before any image is read)."""
    proto = PROTOCOLS.get(protocol) if isinstance(protocol, str) else None
    if proto is None:
        raise InputError(f"unknown protocol {protocol!r}; valid names: {', '.join(protocol_names())}")
    if not isinstance(quantize, _Default) and quantize is not None:
        if quantize not in QUANTIZE_MODES:
            raise InputError(f"unknown quantize mode {quantize!r}; valid: {', '.join(QUANTIZE_MODES)} (or none)")
        if proto.quantize is None:
            raise InputError(f"protocol {protocol!r} does not quantise outputs; quantize={quantize!r} is invalid")
    if downsample and not proto.can_downsample:
        raise InputError(f"protocol {protocol!r} has no SSIM down-sampling step; downsample=True is invalid")
    return proto


def measure(
    output: Tensor,
    target: Tensor,
    *,
    protocol: str,
    quantize: QuantizeMode | _Default | None = PROTOCOL_DEFAULT,
    downsample: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-image (psnr, ssim), float64 tensors of shape (N,), under a named protocol of :data:`PROTOCOLS`.

    quantize: 8-bit conversion of the output ('round' = SIAN's cv2.imwrite, 'floor' = PReNet's np.uint8,
    None = none); only 'matlab-y' quantises (default 'round'). downsample: PReNet's ssim.m (only 'matlab-y').
    """
    proto = check_protocol(protocol, quantize=quantize, downsample=downsample)
    _check_pair(output, target)
    if output.shape[1] != 3:
        raise InputError(f"measure expects (N, 3, H, W) RGB images, got shape {tuple(output.shape)}")
    if isinstance(quantize, _Default):
        quantize = proto.quantize

    with torch.no_grad():
        raw_out, raw_tgt = output.to(torch.float64), target.to(torch.float64)
        # Every protocol clips the output it scores; 8-bit conversion in the output's dtype, as the repos do.
        out = _quantize(output.clamp(0.0, 1.0), quantize).to(torch.float64)
        tgt = raw_tgt.clamp(0.0, 1.0) if proto.clip_target else raw_tgt
        s_out, s_tgt = (out, tgt) if proto.ssim_clipped else (raw_out, raw_tgt)
        if proto.y_channel:
            out, tgt, s_out, s_tgt = (rgb_to_y(t) for t in (out, tgt, s_out, s_tgt))
        p = psnr(out, tgt, data_range=1.0)
        s = ssim(
            s_out * proto.ssim_scale, s_tgt * proto.ssim_scale, data_range=proto.ssim_data_range,
            window=proto.window, window_size=proto.window_size, padding=proto.padding,
            sample_covariance=proto.sample_covariance, downsample=downsample,
        )
    return p, s
