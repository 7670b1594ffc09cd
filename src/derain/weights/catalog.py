"""Weight records: every weight set derain knows, as data.

A record names the architecture and constructor arguments, the file and its pin, the channel order the weights
expect, the training data, the licence, the protocol its authors measured with and the metrics reported for it.
Official checkpoints carry their :class:`~derain.io.download.Source` (repository, commit, path, pins):
:func:`derain.weights.hub.locate` finds the user's copy or downloads it on first use. Our own weights, and
SPANet's (its licence permits redistribution with its notice), ship inside the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from derain.errors import InputError
from derain.io.download import Source

ChannelOrder = Literal["rgb", "bgr"]


@dataclass(frozen=True)
class WeightRecord:
    name: str                         # "arch.tag"
    model: str                        # registry name (derain.archs.MODELS)
    file: str                         # official: path in the cache's official layout; bundled: package file name
    sha256: str                       # of the file derain loads ("" when only a git blob pin is known)
    origin: str                       # who made it: repository and path, or "derain: derain train <config>"
    training_data: str
    license: str
    options: Mapping[str, Any] = field(default_factory=dict)
    channel_order: ChannelOrder = "rgb"
    bundled: bool = False
    quantize: Literal["floor", "round"] = "round"   # how the authors saved outputs before measuring (matlab-y)
    metrics: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # "dataset/protocol" -> (psnr, ssim)
    notes: str = ""
    source: Source | None = None      # where the official file is downloaded from (None: ours)
    protocol: str = "matlab-y"        # the metric protocol the authors' repository used
    notice: str = ""                  # licence notice shipped with a redistributed file (package file name)

    @property
    def redistributed(self) -> bool:
        """Official weights shipped inside derain (their licence allows it)."""
        return self.bundled and self.source is not None

    @property
    def size(self) -> int | None:
        return self.source.size if self.source is not None else None


_NO_LICENSE = "none published by the authors: downloaded from them at your request, never shipped with derain"
_PRENET_REPO, _PRENET_HEAD = "csdwren/PReNet", "6d908d1e3c7ff5c26fee624112297ad1c8603ca7"
_SIAN_REPO, _SIAN_COMMIT = "pangbo1997/RainRemoval", "81fedd28714dd7951a77b65d4bfb83162a560a63"
_JDNET_REPO, _JDNET_COMMIT = "Ohraincu/JDNet", "ea5a8eb54b52fddb769200928caccb754f6aae3f"
_SPANET_REPO, _SPANET_COMMIT = "stevewongv/SPANet", "f0d982d05e1c74a886d5c12c0e81293f57861cd2"
_PRENET_MSE_COMMIT = "c5ca7c21bb5e43e78d4027ff0dfa7c4c97995d58"  # the only commit holding PReNet6_MSE


def _prenet(name: str, model: str, path: str, sha: str, size: int, data: str, *,
            options: Mapping[str, Any] | None = None, metrics: Mapping[str, tuple[float, float]] | None = None,
            notes: str = "", commit: str = _PRENET_HEAD) -> WeightRecord:
    source = Source(_PRENET_REPO, commit, f"logs/{path}", sha256=sha, size=size)
    return WeightRecord(name=name, model=model, file=f"prenet/{path}", sha256=sha, origin=source.where,
                        training_data=data, license=_NO_LICENSE, options=options or {}, quantize="floor",
                        metrics=metrics or {}, notes=notes, source=source)


def _sian(tag: str, sha: str, size: int, data: str,
          metrics: Mapping[str, tuple[float, float]] | None = None) -> WeightRecord:
    source = Source(_SIAN_REPO, _SIAN_COMMIT, f"pretrained_models/{tag}.pth", sha256=sha, size=size)
    return WeightRecord(name=f"sian.{tag}", model="sian", file=f"sian/{tag}.pth", sha256=sha, origin=source.where,
                        training_data=data, license=_NO_LICENSE, quantize="round", metrics=metrics or {},
                        source=source)


def _jdnet(name: str, model: str, folder: str, blob: str, data: str, metrics: Mapping[str, tuple[float, float]],
           notes: str) -> WeightRecord:
    """JDNet's checkpoints exist only in the history of its repository (commit ea5a8eb5, deleted later), pinned by
    their git blob ids. Not checked here: derain's tests load a file built with their exact key layout."""
    source = Source(_JDNET_REPO, _JDNET_COMMIT, f"code/{folder}/models/latest_net", git_blob=blob)
    return WeightRecord(name=name, model=model, file=f"jdnet/{folder}/latest_net", sha256="", origin=source.where,
                        training_data=data, license=_NO_LICENSE, channel_order="bgr", quantize="round",
                        metrics=metrics, notes=notes, source=source, protocol="torch-rgb")


def _spanet() -> WeightRecord:
    source = Source(_SPANET_REPO, _SPANET_COMMIT, "model/latest", size=3450077,
                    sha256="3b5d58d0f4569004a0d2dc6f4373463bd60991fc8a04c061361357cf012e5eb0")
    return WeightRecord(
        name="spanet.real", model="spanet", file="weights/spanet.real.safetensors",
        sha256="cfa4cf19ed93d1742c43cc4051365f88c97cd146802ce781ae95e69191e4c398",
        origin=source.where, training_data="SPA-Data real rain (training/real_world.txt)",
        license="BSD-3-Clause-style licence of stevewongv/SPANet (redistributed with its notice)",
        channel_order="bgr", bundled=True, quantize="round", metrics={"rain100L/matlab-y": (29.340, 0.9022)},
        notes="the official weights, converted to safetensors and shipped with derain (its licence permits it); "
              "trained on real rain, so low on synthetic Rain100L; boundary_relu=True (the official CUDA IRNN)",
        source=source, protocol="skimage-legacy", notice="weights/spanet.real.LICENSE.txt")


_H, _L, _R1400 = "RainTrainH (1,254 pairs)", "RainTrainL (200 pairs)", "Rain12600 (900 x 14)"
_JDNET_H = "Rain100H training pairs (the paper: 1,800; which release is not recorded)"
_JDNET_L = "Rain100L training pairs (the paper: 1,800; which release is not recorded)"
_UNSTATED = "not stated in the repository"
_BSDS = ("BSDS500 clean photos less the 91 Rain100L/H ground truths (401 for training, 8 held out for validation), "
         "with synthetic rain made on the fly")


def _ours(name: str, model: str, sha: str, config: str, data: str,
          metrics: Mapping[str, tuple[float, float]], notes: str) -> WeightRecord:
    """Weights trained by this project (configs/, derain train): bundled in the package, with a model card
    ``assets/weights/<name>.md``."""
    return WeightRecord(name=name, model=model, file=f"weights/{name}.safetensors", sha256=sha,
                        origin=f"derain: derain train {config}", training_data=data, license="MIT (derain)",
                        bundled=True, quantize="round", metrics=metrics, notes=notes)


_RECORDS: tuple[WeightRecord, ...] = (
    _ours("derain.default", "prn_pair", "2a07087d784546036e4f1474e9788cc7c22db3fb20149d6872c1ccbb8bb73318",
          "configs/default_light.yaml, then configs/default_light_diverse.yaml (lr 1e-4, 30% rain-free, step 305) + "
          "configs/default_heavy.yaml (+ scripts/train_experiments.py --variant default_heavy_cal2, then "
          "default_heavy_cal2_nohaze, then configs/default_heavy_downpour.yaml, step 900, then the same with "
          "data.clean_share=0.3 and data.clean_picks=4, step 1,000, then with data.style=downpour_near, "
          "data.clean_picks=8, data.crop=128, data.batch=4, train.steps=2000 and train.seed=30, the last step), "
          "then scripts/make_default.py --labels better "
          "--router-styles diverse photoshop downpour, the gate fitted with --gate-styles diverse photoshop",
          _BSDS + " (light: recalibrated, then diverse rain; heavy: recalibrated, then lit downpours; router: "
          "diverse, photoshop and downpour rain; gate: diverse and photoshop rain)",
          {"rain100L/matlab-y": (30.5083, 0.9234), "rain100H/matlab-y": (17.7087, 0.5945),
           "rain100L/matlab-y@every20": (31.624, 0.9392), "rain100H/matlab-y@every20": (18.430, 0.6204)},
          "two PRNs (light and heavy rain) fine-tuned from the first mixed PRN, 2,305 steps for the light one (the "
          "last 305 on diverse rain with rain-free crops) and 8,900 for the heavy one (the last 3,900 on lit "
          "downpours, the last 3,000 of them with 30% rain-free crops chosen to look veiled, the last 2,000 on "
          "close scenes with little veil in 128x128 crops), each image routed "
          "by a classifier fitted on three training renderers, and a gate fitted on "
          "diverse and photoshop rain that removes only the share of the rain layer likely to help (little on a "
          "rain-free photo); see its model card"),
    _ours("derain.prn_mixed", "prn", "cd61b8e2d1b6983b63a4551f1a3c424ec6dcc44e0c7a85147f99b30748b0bca3",
          "configs/default.yaml", _BSDS + " (light and heavy mixed, the first styles)",
          {"rain100L/matlab-y": (28.310, 0.9364), "rain100H/matlab-y": (18.644, 0.5924),
           "rain100L/matlab-y@every20": (28.538, 0.9423), "rain100H/matlab-y@every20": (18.990, 0.6094)},
          "the previous derain.default: one PRN on mixed rain, 5,000 steps in 90 min on a 2-core CPU; the starting "
          "point of both networks of derain.default (stage 1 of its recipe)"),
    _ours("derain.jdnet_light", "jdnet", "ffb476b3897c4fd3bb53503c29bce725a7960ff6da81e4ae3f7ad08ad7b68917",
          "configs/jdnet_light_cpu.yaml", _BSDS + " (light rain)",
          {"rain100L/matlab-y": (31.372, 0.9424), "rain100H/matlab-y": (14.649, 0.4688),
           "rain100L/matlab-y@every20": (31.329, 0.9465), "rain100H/matlab-y@every20": (15.470, 0.5280)},
          "the paper's JDNet and recipe on a 3,000-step CPU schedule: a snapshot at step 1,950 (past the first lr "
          "step at 1,800; the run continues); float16 file; see its model card"),
    _ours("derain.jdnet_heavy", "jdnet", "ca97cb31e8b26023ac85a1cd02e876c164cd2098eead77a668f381b3b2ebec89",
          "configs/jdnet_heavy_cpu.yaml", _BSDS + " (heavy rain)",
          {"rain100H/matlab-y": (22.503, 0.7472), "rain100H/matlab-y@every20": (22.752, 0.7580)},
          "the paper's JDNet and recipe on a short CPU schedule, warm-started from derain.jdnet_light: 650 steps "
          "(lr steps at 390 and 520); float16 file; see its model card"),
    _spanet(),
    _sian("rain100l", "ab3894696b6c17c7a901ad4096dc4cdfaac835a00447ec64553df809ee143956", 2057017, _L,
          {"rain100L/matlab-y": (38.823, 0.9839)}),
    _sian("rain100h", "eafdb36506a4b087c1ccd8b6f73009284bf6daa223ecce28d713aa6472c91b91", 2056353, _H,
          {"rain100H/matlab-y": (30.329, 0.9092)}),
    _sian("rain1400", "1812bdbf0ac17d5de70f80c93f5d29e31ad57dc4e105a7b09bd17a04b48c04b8", 2057017, _R1400),
    _prenet("prenet.rain100h", "prenet", "Rain100H/PReNet6/net_latest.pth",
            "127c0098787c5272f1f8583f6c5202e7ef674f750cd145a1691912a6d9e96210", 681694, _H,
            metrics={"rain100H/matlab-y": (29.465, 0.8990)}),
    _prenet("prenet_r.rain100h", "prenet_r", "Rain100H/PReNet6_r/net_latest.pth",
            "ece8127c651cf49026d998fa36857cb9d462c92cf535b640a377fc025f765b5f", 382755, _H),
    _prenet("prn.rain100h", "prn", "Rain100H/PRN6/net_latest.pth",
            "f1d56a7df0851eb087652663781d3f34c4c37a4c7ddd9a3f0802abbede1a06c2", 384596, _H),
    _prenet("prn_r.rain100h", "prn_r", "Rain100H/PRN6_r/net_latest.pth",
            "99242ce096c9c617bd529a5e189797e8955a4b8611d355974c7c1c64a18b9074", 86047, _H),
    _prenet("prenet.rain100l", "prenet", "Rain100L/PReNet6/net_latest.pth",
            "cb9b743bb33cf6e5c56ba45f8ade93add46266dea9fa582e1934dc5eed942333", 681694, _L,
            metrics={"rain100L/matlab-y": (37.464, 0.9792)}),
    _prenet("prenet_r.rain100l", "prenet_r", "Rain100L/PReNet6_r/net_latest.pth",
            "31dd4419cdb0f4da623d974747113d60e2c22803598c39dcf03d789f86a7f62b", 382755, _L),
    _prenet("prn.rain100l", "prn", "Rain100L/PRN6/net_latest.pth",
            "ed4be5b78f76dcec5c781e1655dee48c2a90b56993de555945d72e31848aea99", 384596, _L),
    _prenet("prn_r.rain100l", "prn_r", "Rain100L/PRN6_r/net_latest.pth",
            "87ee3b1c027b33e7e532a4881c3b077d100cf40c65dd2843690600e3023acee0", 86047, _L),
    _prenet("prenet.rain1400", "prenet", "Rain1400/PReNet6/net_latest.pth",
            "d5744dc2e35d73187a3f34936b3413884d293277073ffb78b961a78e65337879", 681694, _R1400),
    _prenet("prenet_r.rain1400", "prenet_r", "Rain1400/PReNet6_r/net_latest.pth",
            "c639c19b342d6ae977b7ff8a4b2fbeb24179510a6e57b8bf5ef32d6b071fc8d5", 382755, _R1400),
    _prenet("prn.rain1400", "prn", "Rain1400/PRN6/net_latest.pth",
            "c6620860a51b54afec0c1eebe412f0f1ca00128100f5b23c13758605206a0bf2", 384596, _R1400),
    _prenet("prn_r.rain1400", "prn_r", "Rain1400/PRN6_r/net_latest.pth",
            "c0f7f18f3d33e26f50af8c693494a03c2776c627140a1d8e0514edd53e9398fb", 86047, _R1400),
    _prenet("prenet_lstm.t6", "prenet_lstm", "Ablation/PReNet6_LSTM/net_latest.pth",
            "b32541dfad6aa173c537dada8597475227e920fc9c8e1bbb80061363462bc14c", 681694, _H,
            notes="ablation, 6 stages"),
    _prenet("prenet_lstm.t5", "prenet_lstm", "Ablation/PReNet5_LSTM/net_latest.pth",
            "02a0a1c184a87bf816e341a092756666f52277b5d34d9e224ba6ae904d2e991e", 681694, _H, options={"stages": 5},
            notes="ablation, 5 stages"),
    _prenet("prenet_lstm.t7", "prenet_lstm", "Ablation/PReNet7_LSTM/net_latest.pth",
            "c5971708f06fefcbd467588321958160806225bccb4415e9ca56073d68b8f812", 681694, _H, options={"stages": 7},
            notes="ablation, 7 stages"),
    _prenet("prenet_lstm.recssim", "prenet_lstm", "Ablation/PReNet6_RecSSIM/net_latest.pth",
            "04ee235b6fed1798d48fbfd8b31f853d782fa6fdcae172f533979264a96ed7a4", 681694, _H,
            notes="ablation: SSIM loss on every stage"),
    _prenet("prenet_lstm.mse", "prenet_lstm", "Ablation/PReNet6_MSE/net_latest.pth",
            "362dd1e01ec2331aeff978147c9118ccebb307adbcef934e87e2d7113794356a", 681694, _H,
            notes="ablation: MSE loss (deleted from the repository later; commit c5ca7c21)",
            commit=_PRENET_MSE_COMMIT),
    _prenet("prenet_gru.rain100h", "prenet_gru", "Ablation/PReNet6_GRU/net_latest.pth",
            "2c0ed5ec96fe54c83a474c597741843ae4e98f1aac019470ce51235ac3bf66ff", 607325, _H, notes="ablation: GRU"),
    _prenet("prenet_x.rain100h", "prenet_x", "Ablation/PReNet6_x/net_latest.pth",
            "ae76d3dce017c181f6c541c4884d606315b4a09ca1d29757ca44c8688e845bfe", 678238, _H,
            notes="ablation: stage input x_{t-1} only"),
    _prenet("prenet_real.1", "prenet_real", "real/PReNet1.pth",
            "eba0c0ed941565abce9c61ceb8b36ff5e1532320c20efc11843f5f7fc810f7bb", 681694, _UNSTATED),
    _prenet("prenet_real.2", "prenet_real", "real/PReNet2.pth",
            "cbf6068474e64bf81ea8597fe1473cda19e7d0afadb3c81beb41f8dcc3751269", 681694, _UNSTATED),
    _jdnet("jdnet.rain100l", "jdnet", "base/rain100L", "8544574756812e954dea6196907f579108c091c6", _JDNET_L,
           {"rain100L/paper": (38.65, 0.99), "rain12/paper": (37.02, 0.97)},
           "JDNet paper Table 1 (Rain12: the paper does not say which weights it used)"),
    _jdnet("jdnet.rain100h", "jdnet", "base/rain100H", "d76c369f6618e25c97e4b5f81b5d1ab7962c8bc0", _JDNET_H,
           {"rain100H/paper": (30.02, 0.92)}, "JDNet paper Table 1"),
    _jdnet("jdnet.rain1200", "jdnet", "base/rain1200", "5f40a986229749c75d8d1dbbed1d173d885b170d",
           "Rain1200 (DID-MDN training data, 12,000 pairs)", {}, "no number in the paper"),
    _jdnet("jdnet_r1.rain100h", "jdnet_r1", "ablation/r1", "27e704730ac7d8ae8d7c02096b6610f4c6f3f25f", _JDNET_H,
           {"rain100H/paper": (29.3357, 0.9130)}, "ablation R1 (scale aggregation only), JDNet paper Table 2"),
    _jdnet("jdnet_r2.rain100h", "jdnet_r2", "ablation/r2", "b223a1d13b5013629ffa084f354269ef1630d586", _JDNET_H,
           {"rain100H/paper": (30.0307, 0.9219)},
           "ablation R2 (scale aggregation + self-calibrated convolution), JDNet paper Table 2"),
    _jdnet("jdnet.mae", "jdnet", "diff_loss/mae", "6c43393f6713a2564237f7343d4924f4ab649364", _JDNET_H,
           {"rain100H/paper": (29.2365, 0.9002)}, "loss study: MAE instead of -SSIM, JDNet paper Table 3"),
    _jdnet("jdnet.mse", "jdnet", "diff_loss/mse", "35f1bb6c11dd2b039f709192d4d2853334d32ba4", _JDNET_H,
           {"rain100H/paper": (28.7797, 0.8896)}, "loss study: MSE instead of -SSIM, JDNet paper Table 3"),
)


def _index(records: tuple[WeightRecord, ...]) -> dict[str, WeightRecord]:
    table: dict[str, WeightRecord] = {}
    for record in records:
        if record.name in table:
            raise ValueError(f"duplicate weight record {record.name!r}")
        table[record.name] = record
    return table


CATALOG: dict[str, WeightRecord] = _index(_RECORDS)
# Files recognised by content: the file derain loads, and the official original of a redistributed record.
BY_SHA256: dict[str, WeightRecord] = {
    **{r.source.sha256: r for r in _RECORDS if r.source is not None and r.source.sha256},
    **{r.sha256: r for r in _RECORDS if r.sha256},
}


def list_weights() -> list[str]:
    """Names accepted by :func:`derain.load`, sorted."""
    return sorted(CATALOG)


def get_record(name: str) -> WeightRecord:
    try:
        return CATALOG[name]
    except KeyError:
        raise InputError(f"unknown weights {name!r}; valid names: {', '.join(list_weights())} "
                         "(or pass the path of a checkpoint file)") from None
