"""scripts/make_default.py on a few real training photos: it builds a loadable prn_pair with a fitted router (on
rain of three renderers) and gate, keeps a router when asked, fits the gate either way, saves the gate's training
data, and trains a local gate from that data on top of a kept image-level gate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

import derain
from derain.weights.store import load_weights
from tests.conftest import REPO, require_shared, run_script

SCRIPT = REPO / "scripts" / "make_default.py"


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return run_script(SCRIPT, *args)


def test_builds_a_pair_keeps_a_router_and_fits_the_gate_both_ways(tmp_path: Path) -> None:
    require_shared("data", "bsds500")
    require_shared("data", "rain_streaks")
    halves = ("--light", "derain.default:light", "--heavy", "derain.default:heavy")
    first = _run(*halves, "--photos", "3", "--router-styles", "diverse", "photoshop", "downpour", "--gate-photos", "3",
                 "--threads", "2", "-o", tmp_path / "a.safetensors")
    assert first.returncode == 0, first.stderr
    assert "Rain100" not in first.stdout  # it reads no test set
    assert "of 9 training images restored better" in first.stdout  # 3 rainy photos, one image per renderer
    a = load_weights(tmp_path / "a.safetensors")
    assert a.model == "prn_pair"
    info = json.loads(a.metadata["derain.router"])
    assert info["labels"] == "better" and info["gate_fit"] == "helps" and info["gate_photos"] == 3
    assert info["router_styles"] == ["diverse", "photoshop", "downpour"]
    pair_a = a.build()
    assert float(pair_a.router_weight.abs().sum()) > 0 and float(pair_a.gate_weight.abs().sum()) > 0

    second = _run(*halves, "--router-from", tmp_path / "a.safetensors", "--gate-photos", "3", "--gate-fit", "psnr",
                  "--save-gate-data", tmp_path / "gate.pt", "--threads", "2", "-o", tmp_path / "b.safetensors")
    assert second.returncode == 0, second.stderr
    b = load_weights(tmp_path / "b.safetensors")
    pair_b = b.build()
    assert json.loads(b.metadata["derain.router"])["router_from"] == str(tmp_path / "a.safetensors")
    for name in ("router_mean", "router_scale", "router_weight", "router_bias"):
        assert torch.equal(getattr(pair_a, name), getattr(pair_b, name))
    data = torch.load(tmp_path / "gate.pt")
    assert data["features"].shape == (6, 16) and data["labels"].shape == (6,) and data["terms"].shape == (6, 3)
    assert float(data["labels"][0::2].sum()) == 0  # a rain-free photo is never helped
    # the same images and networks: the gate differs only by its fit
    assert torch.equal(pair_a.gate_mean, pair_b.gate_mean) and not torch.equal(pair_a.gate_weight,
                                                                               pair_b.gate_weight)
    # the networks are the shipped ones
    shipped = load_weights("derain.default").build()
    assert torch.equal(pair_b.light.state_dict()["conv0.0.weight"], shipped.light.state_dict()["conv0.0.weight"])
    assert len(data["images"]) == 6 and all(t.shape == (3, 321, 481) or t.shape == (3, 481, 321)
                                            for image in data["images"] for t in image)

    # a local gate on top of b's router and image-level gate, from the saved images (no network run)
    third = _run(*halves, "--router-from", tmp_path / "b.safetensors", "--gate-from", tmp_path / "b.safetensors",
                 "--load-gate-data", tmp_path / "gate.pt", "--local-gate-steps", "200", "-o",
                 tmp_path / "c.safetensors")
    assert third.returncode == 0, third.stderr
    c = load_weights(tmp_path / "c.safetensors")
    assert c.options == {"local_gate": True}
    pair_c = c.build()
    for name in ("gate_mean", "gate_scale", "gate_weight", "gate_bias"):
        assert torch.equal(getattr(pair_b, name), getattr(pair_c, name))
    info = json.loads(c.metadata["derain.router"])
    assert info["local_gate_steps"] == 200 and info["gate_from"] == str(tmp_path / "b.safetensors")
    # it serves its own training images better than the image-level gate alone did
    assert (info["rain_free_after"] + info["rainy_after"]) > (info["rain_free_before"] + info["rainy_before"])
    x = data["images"][1][0][None].float()
    restored = derain.Restorer(pair_c, name="c", device="cpu")(x, scale=1)
    assert restored.shape == x.shape and not torch.equal(restored, derain.Restorer(pair_b, name="b", device="cpu")(
        x, scale=1))


def test_refuses_a_router_source_without_a_router_and_an_existing_data_file(tmp_path: Path) -> None:
    halves = ("--light", "derain.default:light", "--heavy", "derain.default:heavy")
    bad = _run(*halves, "--router-from", "derain.default:light", "-o", tmp_path / "x.safetensors")
    assert bad.returncode == 2 and "have no router" in bad.stderr and "Traceback" not in bad.stderr
    existing = tmp_path / "gate.pt"
    existing.write_bytes(b"keep")
    again = _run(*halves, "--save-gate-data", existing, "-o", tmp_path / "x.safetensors")
    assert again.returncode == 2 and "exists" in again.stderr and existing.read_bytes() == b"keep"
    assert not (tmp_path / "x.safetensors").exists()
    # router renderers belong to a router that is fitted here
    kept = _run(*halves, "--router-from", "derain.default", "--router-styles", "photoshop", "-o",
                tmp_path / "x.safetensors")
    assert kept.returncode == 2 and "--router-styles" in kept.stderr and "Traceback" not in kept.stderr
    threads = _run(*halves, "--threads", "0", "-o", tmp_path / "x.safetensors")
    assert threads.returncode == 2 and "--threads" in threads.stderr and "Traceback" not in threads.stderr
    # a local gate needs the gate's images: refused before any network runs
    no_images = _run(*halves, "--gate-photos", "0", "--local-gate-steps", "10", "-o", tmp_path / "x.safetensors")
    assert no_images.returncode == 2 and "--gate-photos" in no_images.stderr and "Traceback" not in no_images.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_gate_data_of_two_renderers_and_a_kept_gate(tmp_path: Path) -> None:
    """``--gate-styles diverse photoshop`` (how stage 13's gate was fitted): each photo rain-free and with rain of
    each renderer; the saved data says which images are rain-free; ``--gate-from`` keeps a pair's gate as it is."""
    require_shared("data", "bsds500")
    require_shared("data", "rain_streaks")
    halves = ("--light", "derain.default:light", "--heavy", "derain.default:heavy")
    run = _run(*halves, "--router-from", "derain.default", "--gate-from", "derain.default", "--gate-photos", "2",
               "--gate-styles", "diverse", "photoshop", "--save-gate-data", tmp_path / "gate.pt",
               "-o", tmp_path / "d.safetensors")
    assert run.returncode == 0, run.stderr
    data = torch.load(tmp_path / "gate.pt")
    assert data["rain_free"].tolist() == [True, False, False] * 2 and len(data["images"]) == 6
    assert float(data["labels"][data["rain_free"]].sum()) == 0
    rainy = [(x, clean) for (x, _, clean), free in zip(data["images"], data["rain_free"], strict=True) if not free]
    assert all(float((x.float() - clean.float()).abs().mean()) > 0.003 for x, clean in rainy)
    assert not torch.equal(rainy[0][0], rainy[1][0])  # two renderers, two different rains on one photo
    d = load_weights(tmp_path / "d.safetensors")
    assert json.loads(d.metadata["derain.router"])["gate_styles"] == ["diverse", "photoshop"]
    shipped, kept = load_weights("derain.default").build(), d.build()
    for name in ("gate_mean", "gate_scale", "gate_weight", "gate_bias", "router_weight"):
        assert torch.equal(getattr(shipped, name), getattr(kept, name))
    missing = _run(*halves, "--load-gate-data", tmp_path / "none.pt", "-o", tmp_path / "e.safetensors")
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    # stage 18: each rain-free photo also through the heavy network, router bypassed, labelled 0
    forced = _run(*halves, "--router-from", "derain.default", "--gate-photos", "1", "--gate-styles", "diverse",
                  "--gate-heavy-rain-free", "--save-gate-data", tmp_path / "forced.pt",
                  "-o", tmp_path / "g.safetensors")
    assert forced.returncode == 0, forced.stderr
    data = torch.load(tmp_path / "forced.pt")
    assert data["rain_free"].tolist() == [True, False, True] and data["labels"][[0, 2]].tolist() == [0.0, 0.0]
    (x0, routed, _), (x2, through_heavy, _) = data["images"][0], data["images"][2]
    assert torch.equal(x0, x2) and not torch.equal(routed, through_heavy)  # the router sends it to the light one
    assert json.loads(load_weights(tmp_path / "g.safetensors").metadata["derain.router"])["gate_heavy_rain_free"]
    clash = _run(*halves, "--gate-heavy-rain-free", "--load-gate-data", tmp_path / "forced.pt", "-o",
                 tmp_path / "h.safetensors")
    assert clash.returncode == 2 and "--load-gate-data" in clash.stderr and "Traceback" not in clash.stderr
    # a new heavy network in an existing pair (stage 17): router and gate kept, the gate not measured (no images)
    swap = _run("--light", "derain.default:light", "--heavy", "derain.prn_mixed", "--router-from", "derain.default",
                "--gate-from", "derain.default", "--gate-photos", "0", "-o", tmp_path / "f.safetensors")
    assert swap.returncode == 0 and "not measured" in swap.stdout, swap.stderr
    info = json.loads(load_weights(tmp_path / "f.safetensors").metadata["derain.router"])
    assert info["gate_from"] == "derain.default" and "gate_photos" not in info
    # what each name meant when the file was built: the files' sha256 (derain.default changes over time)
    default_sha, mixed_sha = load_weights("derain.default").sha256, load_weights("derain.prn_mixed").sha256
    assert info["gate_from_sha256"] == info["router_from_sha256"] == info["light_sha256"] == default_sha
    assert info["heavy_from"] == "derain.prn_mixed" and info["heavy_sha256"] == mixed_sha != default_sha
    swapped = load_weights(tmp_path / "f.safetensors").build()
    for name in ("gate_mean", "gate_scale", "gate_weight", "gate_bias", "router_weight", "router_bias"):
        assert torch.equal(getattr(shipped, name), getattr(swapped, name))
    heavy = load_weights("derain.prn_mixed").build()
    assert all(torch.equal(a, b) for a, b in zip(heavy.state_dict().values(), swapped.heavy.state_dict().values(),
                                                 strict=True))
    assert not torch.equal(shipped.heavy.state_dict()["conv0.0.weight"], swapped.heavy.state_dict()["conv0.0.weight"])
