"""Weights and data sets by name, downloaded on first use from a loopback hub (no internet): verified, cached
atomically, fetched once, and every failure (corrupt, cut, slow, refused) a one-line error that leaves nothing in
the cache."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import derain
from derain.cli import main as cli
from derain.data import sets
from derain.io.download import Source, fetch, file_digest
from derain.weights import CATALOG
from derain.weights import hub as weights_hub
from tests.conftest import REPO, official_jdnet_state, require_shared

OFFICIAL = sorted(name for name, r in CATALOG.items() if r.source is not None and not r.bundled and r.sha256)


def cached_files(cache: Path) -> list[Path]:
    """Everything in the cache but the lock files."""
    return sorted(p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts) if cache.exists() else []


def test_first_use_downloads_verifies_and_loads_then_uses_the_cache(hub, capsys: pytest.CaptureFixture) -> None:
    restorer = derain.load("sian.rain100h", device="cpu")
    assert hub.downloads() == 1
    path = hub.cache / "official" / "sian" / "rain100h.pth"
    assert path.is_file() and file_digest(path).sha256 == CATALOG["sian.rain100h"].sha256
    assert "publish no licence" in capsys.readouterr().err  # said once, on the download
    local = derain.load(require_shared("weights", "official", "sian", "rain100h.pth"), device="cpu")
    x = torch.rand(1, 3, 24, 32)
    assert torch.equal(restorer(x), local(x))
    again = derain.load("sian.rain100h", device="cpu")
    assert hub.downloads() == 1 and again.weights.record is CATALOG["sian.rain100h"]
    assert "licence" not in capsys.readouterr().err


def test_every_official_record_downloads_and_loads_strictly(hub) -> None:
    for name in OFFICIAL:
        record = CATALOG[name]
        path = weights_hub.locate(record)
        assert path == hub.cache / "official" / record.file
        weights = derain.weights.load_weights(name)
        assert weights.record is record and weights.sha256 == record.sha256
        weights.build()  # strict
    assert hub.downloads() == len(OFFICIAL) == 24


def test_derain_weights_still_wins(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERAIN_WEIGHTS", str(require_shared("weights", "official")))
    derain.load("prenet.rain100l", device="cpu")
    assert hub.downloads() == 0 and not cached_files(hub.cache)


def test_corrupt_file_is_refused_and_nothing_is_kept(hub) -> None:
    hub.mode = "corrupt"
    record = CATALOG["prn.rain100l"]
    with pytest.raises(derain.DownloadError) as info:
        derain.load("prn.rain100l")
    text = str(info.value)
    assert record.source.url(hub.url) in text and f"expected {record.sha256}" in text and "got " in text
    assert "\n" not in text
    assert not cached_files(hub.cache)


def test_cut_connection_leaves_no_partial_file_and_the_next_call_succeeds(hub, monkeypatch) -> None:
    monkeypatch.setenv("DERAIN_HUB_RETRIES", "1")
    hub.mode, hub.cuts = "cut", 1
    record = CATALOG["prn_r.rain100h"]
    with pytest.raises(derain.DownloadError, match=f"connection closed after {record.size // 2} of {record.size} "
                                                   "bytes.*put it at"):
        derain.load("prn_r.rain100h")
    dest = hub.cache / "official" / record.file
    assert not dest.exists()  # only the hidden partial file, kept to resume from
    assert [p.name for p in cached_files(hub.cache)] == [".net_latest.pth.download"]
    derain.load("prn_r.rain100h")  # the server is well again: the rest of the file, verified
    assert hub.ranges == [record.size // 2]
    assert [p.name for p in cached_files(hub.cache)] == ["net_latest.pth"]


def test_retries_resume_after_a_cut(hub) -> None:
    hub.mode, hub.cuts = "cut", 2
    derain.load("prn_r.rain1400")  # DERAIN_HUB_RETRIES=3: two cuts, then the rest of the file
    size = CATALOG["prn_r.rain1400"].size
    assert hub.downloads() == 3 and hub.ranges == [size // 2, size // 2 + (size - size // 2) // 2]


def test_timeout(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERAIN_HUB_RETRIES", "1")
    monkeypatch.setenv("DERAIN_HUB_TIMEOUT", "0.2")
    hub.mode, hub.delay = "slow", 0.5
    with pytest.raises(derain.DownloadError, match="timed out"):
        derain.load("prn_r.rain100l")
    assert not (hub.cache / "official" / CATALOG["prn_r.rain100l"].file).exists()


def test_refused_is_one_line_naming_the_url_and_where_to_put_the_file(hub, monkeypatch) -> None:
    hub.close()
    record = CATALOG["prenet.rain100h"]
    out = subprocess.run([sys.executable, "-m", "derain", "eval", "--weights", "prenet.rain100h", "--data",
                          str(require_shared("data", "rain100H")), "--limit", "1"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert record.source.url(hub.url) in lines[0]
    assert f"put it at {hub.cache / 'official' / record.file}" in lines[0] and "DERAIN_WEIGHTS" in lines[0]
    assert not cached_files(hub.cache)


def test_missing_file_is_not_retried(hub) -> None:
    hub.mode = "missing"
    with pytest.raises(derain.DownloadError, match="HTTP 404"):
        derain.load("prn.rain1400")
    assert hub.downloads() == 1


def test_two_processes_at_once_end_with_one_good_file(hub) -> None:
    hub.mode, hub.delay = "slow", 0.1
    code = "import derain; derain.load('prenet.rain1400')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert hub.downloads() == 1  # the second process waited for the first and used its file
    files = cached_files(hub.cache)
    assert [p.name for p in files] == ["net_latest.pth"]
    assert file_digest(files[0]).sha256 == CATALOG["prenet.rain1400"].sha256


def test_git_blob_pin(hub, tmp_path: Path) -> None:
    blob_file = tmp_path / "payload.bin"
    blob_file.write_bytes(b"derain\n" * 1000)
    blob = subprocess.run(["git", "hash-object", str(blob_file)], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert file_digest(blob_file).git_blob == blob
    source = Source("someone/repo", "0" * 40, "dir with space/payload.bin", git_blob=blob)
    hub.add(source, blob_file)
    dest = fetch(source, hub.cache / "blob" / "payload.bin", label="payload")
    assert dest.read_bytes() == blob_file.read_bytes()
    hub.mode = "corrupt"
    with pytest.raises(derain.DownloadError, match=rf"git blob expected {blob}, got "):
        fetch(source, hub.cache / "other" / "payload.bin", label="payload")
    assert not (hub.cache / "other" / "payload.bin").exists()


def _jdnet_record_served(hub, tmp_path: Path, state: dict, name: str = "jdnet.rain100h"):
    """The official JDNet file cannot be obtained here: serve one with the official key layout under the record's
    URL, with the record's git-blob pin replaced by that file's own blob id."""
    path = tmp_path / "latest_net"
    torch.save({"net": state, "clock_net": 1234, "opt_net": {"state": {}, "param_groups": []}}, path)
    record = CATALOG[name]
    source = dataclasses.replace(record.source, git_blob=file_digest(path).git_blob)
    hub.add(source, path)
    return dataclasses.replace(record, source=source)


def test_jdnet_record_downloads_and_loads_strictly_as_bgr(hub, tmp_path, monkeypatch) -> None:
    state = official_jdnet_state()
    record = _jdnet_record_served(hub, tmp_path, state)
    monkeypatch.setitem(CATALOG, record.name, record)
    restorer = derain.load("jdnet.rain100h", device="cpu")
    assert restorer.channel_order == "bgr" and restorer.weights.record is record
    loaded = restorer.model.state_dict()
    assert all(torch.equal(v, state[f"module.{k}"]) for k, v in loaded.items())
    assert hub.downloads() == 1


def test_jdnet_file_with_other_keys_names_them(hub, tmp_path, monkeypatch) -> None:
    state = official_jdnet_state()
    dropped = sorted(state)[0]
    del state[dropped]
    state["module.extra.weight"] = torch.zeros(1)
    record = _jdnet_record_served(hub, tmp_path, state, "jdnet.rain100l")
    monkeypatch.setitem(CATALOG, record.name, record)
    message = rf"1 missing key: {dropped.removeprefix('module.')}, 1 unexpected key: extra.weight\); nothing"
    with pytest.raises(derain.WeightsError, match=message):
        derain.load(record.name)
    # a record whose file holds another variant's keys: every difference counted, the first ones named
    record = _jdnet_record_served(hub, tmp_path, official_jdnet_state(), "jdnet_r2.rain100h")
    monkeypatch.setitem(CATALOG, record.name, record)
    with pytest.raises(derain.WeightsError, match=r"do not fit 'jdnet_r2' \(\d+ missing key.*\d+ unexpected keys"):
        derain.load(record.name)


def test_spanet_real_works_without_network_or_shared(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DERAIN_WEIGHTS", raising=False)
    monkeypatch.delenv("DERAIN_DATA", raising=False)
    monkeypatch.delenv("DERAIN_SHARED", raising=False)
    monkeypatch.setenv("DERAIN_CACHE", str(tmp_path / "empty"))  # DERAIN_HUB: a dead port (conftest)
    restorer = derain.load("spanet.real", device="cpu")
    assert restorer.channel_order == "bgr" and restorer.weights.record is CATALOG["spanet.real"]
    official = derain.load(require_shared("weights", "official", "spanet", "latest.pth"), device="cpu")
    x = torch.rand(1, 3, 20, 28)
    assert torch.equal(restorer(x), official(x))
    notice = weights_hub.package_path(CATALOG["spanet.real"]).with_name("spanet.real.LICENSE.txt")
    assert "Redistributions in binary form must reproduce" in notice.read_text()
    assert not (tmp_path / "empty").exists()


def _reference(name: str, limit: int) -> list[tuple[str, float, float]]:
    with open(require_shared("reference", name)) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[:limit]
    return [(r["file"], float(r["psnr_y"]), float(r["ssim_y"])) for r in rows]


def _eval_json(args: list[str], out: Path) -> list[dict]:
    import json

    assert cli(["eval", *args, "--protocol", "matlab-y", "--json", str(out)]) == 0
    return json.loads(out.read_text())["per_image"]


@pytest.mark.parametrize(("weights", "data", "reference"), [
    ("sian.rain100h", "rain100H", "perimg_rain100H_sian_rain100h_round.tsv"),
    ("prenet.rain100l", "rain100L", "perimg_rain100L_prenet_Rain100L_floor.tsv"),
])
def test_eval_downloads_weights_and_reproduces(hub, tmp_path: Path, weights: str, data: str, reference: str) -> None:
    rows = _eval_json(["--weights", weights, "--data", str(require_shared("data", data)), "--limit", "2"],
                      tmp_path / "a.json")
    assert hub.downloads() == 1
    for row, (name, p, s) in zip(rows, _reference(reference, 2), strict=True):
        assert row["name"] == name and abs(row["psnr"] - p) < 0.02 and abs(row["ssim"] - s) < 0.0005


def test_eval_fetches_a_data_set_by_name_and_reproduces(hub, tmp_path: Path) -> None:
    weights = require_shared("weights", "official", "prenet", "Rain100L", "PReNet6", "net_latest.pth")
    rows = _eval_json(["--weights", str(weights), "--data", "rain100L", "--limit", "2"], tmp_path / "b.json")
    for row, (name, p, s) in zip(rows, _reference("perimg_rain100L_prenet_Rain100L_floor.tsv", 2), strict=True):
        assert row["name"] == name and abs(row["psnr"] - p) < 0.02 and abs(row["ssim"] - s) < 0.0005
    folder = hub.cache / "data" / "rain100L"
    assert len(list((folder / "rain").iterdir())) == 100 and (folder / ".complete").is_file()
    before = hub.downloads()
    assert sets.resolve("RAIN100l") == folder and hub.downloads() == before  # cached, any case
    assert sets.verify_set(sets.SETS["rain100L"]) == []


def test_train_fetches_its_named_data(hub, tmp_path: Path) -> None:
    config = REPO / "configs" / "default.yaml"
    out = tmp_path / "run"
    code = cli(["train", str(config), "-o", str(out), "--quiet", "--set", "train.steps=2", "--set", "data.workers=0",
                "--set", "data.val_count=2", "--set", "data.val_size=32"])
    assert code == 0 and (out / "weights.safetensors").is_file()
    assert (hub.cache / "data" / "bsds500" / ".complete").is_file()
    assert (hub.cache / "data" / "rain_streaks" / ".complete").is_file()


def test_corrupt_data_file_is_one_line_and_leaves_the_cache_empty(hub, tmp_path: Path) -> None:
    hub.mode = "corrupt"
    out = subprocess.run([sys.executable, "-m", "derain", "data", "fetch", "real_rain_large"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "not the expected one" in out.stderr
    assert not cached_files(hub.cache)


def test_weights_and_data_commands(hub, capsys: pytest.CaptureFixture) -> None:
    assert cli(["weights", "fetch", "prn_r.rain100l", "spanet.real"]) == 0
    out = capsys.readouterr().out
    assert "spanet.real: bundled" in out and str(hub.cache) in out
    assert cli(["weights", "path", "prn_r.rain100l"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_file()
    assert cli(["weights", "verify"]) == 0
    assert "prn_r.rain100l" in capsys.readouterr().out
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    assert cli(["weights", "verify", "prn_r.rain100l"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert cli(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert "prn_r.rain100l" in listing and "cached" in listing and "jdnet.rain100l" in listing
    assert cli(["weights", "fetch"]) == 1
    assert "name the weights to fetch" in capsys.readouterr().err
    assert cli(["data", "fetch", "real_rain_large"]) == 0
    assert cli(["data", "verify", "real_rain_large"]) == 0
    assert "ok" in capsys.readouterr().out
    assert cli(["data", "list"]) == 0
    assert "real_rain_large" in capsys.readouterr().out
    assert cli(["data", "fetch", "nonsense"]) == 1
    assert "unknown data set 'nonsense'" in capsys.readouterr().err


def test_generalization_sets_come_by_name_through_the_hub(hub, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("nturain_a1", "heavy_rain_haze", "spa_sample"))
    fetched = _eval_json(["--weights", "spanet.real", "--data", "nturain_a1", "--limit", "1"], tmp_path / "hub.json")
    folder = hub.cache / "data" / "nturain_a1"
    assert (folder / ".complete").is_file() and len(list((folder / "norain").iterdir())) == 42
    assert hub.downloads() == 84  # the whole set (42 pairs), no weights: spanet.real is bundled
    monkeypatch.setenv("DERAIN_DATA", str(require_shared("data")))  # the same set from the local mirror
    local = _eval_json(["--weights", "spanet.real", "--data", "nturain_a1", "--limit", "1"], tmp_path / "local.json")
    assert [r["name"] for r in fetched] == [r["name"] for r in local] == ["001.jpg"]
    assert [r["psnr"] for r in fetched] == [r["psnr"] for r in local]
    for name in ("nturain_a1", "heavy_rain_haze", "spa_sample"):
        assert sets.verify_set(sets.SETS[name]) == []  # the shipped manifest matches the mirror's files
