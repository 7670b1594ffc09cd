"""derain.data.PairedFolder: every layout, auto detection, pairing errors, ordering, the real Rain100L set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from derain.data import LAYOUTS, Pair, PairedFolder, natural_key
from derain.errors import DataError, InputError
from derain.io import write_image
from tests.conftest import require_shared


def scene(seed: int, height: int = 12, width: int = 16) -> torch.Tensor:
    """A blocky random picture (3, H, W) holding exact 8-bit levels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (1, 3, height // 4, width // 4), generator=g).float() / 255
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="nearest")[0]


def rainy_of(clean: torch.Tensor, seed: int) -> torch.Tensor:
    """The same scene with bright vertical streaks, still exact 8-bit levels."""
    g = torch.Generator().manual_seed(1000 + seed)
    streaks = (torch.rand(1, 1, clean.shape[2], generator=g) > 0.8).float()
    return torch.round(255 * torch.clamp(clean * 0.75 + 0.25 * streaks, 0, 1)) / 255


def put(path: Path, image: torch.Tensor) -> None:
    write_image(path, image)


def make_pairs(root: Path, rainy_names: list[str], clean_names: list[str]) -> dict[str, torch.Tensor]:
    """Write rainy/clean images under ``root``; returns rainy images by their relative path."""
    written = {}
    for i, (r, c) in enumerate(zip(rainy_names, clean_names, strict=True)):
        clean = scene(i)
        put(root / c, clean)
        put(root / r, rainy_of(clean, i))
        written[r] = rainy_of(clean, i)
    return written


# ------------------------------------------------------------------------------------------------ layouts


def test_rain_norain_layout_and_natural_order(tmp_path: Path) -> None:
    names = ["10.png", "2.png", "1.png"]
    written = make_pairs(tmp_path, [f"rain/{n}" for n in names], [f"norain/{n}" for n in names])
    (tmp_path / "rain" / "notes.txt").write_text("not an image")
    (tmp_path / "norain" / ".DS_Store").write_bytes(b"\x00")
    ds = PairedFolder(tmp_path)
    assert ds.layout == "rain-norain" and ds.root == tmp_path
    assert ds.names == ["1.png", "2.png", "10.png"] and len(ds) == 3
    pair = ds[1]
    assert isinstance(pair, Pair) and pair.name == "2.png"
    assert pair.rainy.shape == (3, 12, 16) and pair.rainy.dtype == torch.float32
    assert torch.equal(pair.rainy, written["rain/2.png"])
    assert torch.equal(pair.clean, scene(1))
    assert ds.pair_paths()[0] == ("1.png", tmp_path / "rain" / "1.png", tmp_path / "norain" / "1.png")
    assert ds[-1].name == "10.png"
    with pytest.raises(IndexError):
        ds[3]
    assert PairedFolder(tmp_path, layout="rain-norain", limit=2).names == ["1.png", "2.png"]
    assert PairedFolder(tmp_path, limit=10).names == ds.names


def test_prenet_test_layout(tmp_path: Path) -> None:
    ids = ["001", "002", "010"]
    make_pairs(tmp_path, [f"rainy/rain-{i}.png" for i in ids], [f"norain-{i}.png" for i in ids])
    ds = PairedFolder(tmp_path)
    assert ds.layout == "prenet"
    assert ds.names == ["rain-001.png", "rain-002.png", "rain-010.png"]
    _, rainy, clean = ds.pair_paths()[2]
    assert rainy == tmp_path / "rainy" / "rain-010.png" and clean == tmp_path / "norain-010.png"
    assert torch.equal(ds[2].clean, scene(2))


def test_prenet_flat_train_layout(tmp_path: Path) -> None:
    ids = ["10", "2", "1", "100"]
    make_pairs(tmp_path, [f"rain-{i}.png" for i in ids], [f"norain-{i}.png" for i in ids])
    ds = PairedFolder(tmp_path)
    assert ds.layout == "prenet"
    assert ds.names == ["rain-1.png", "rain-2.png", "rain-10.png", "rain-100.png"]
    assert torch.equal(ds[0].clean, scene(2))  # "1" was written third
    assert PairedFolder(tmp_path, layout="prenet", limit=3).names[-1] == "rain-10.png"


def test_sian_layout(tmp_path: Path) -> None:
    ids = ["3", "20", "100"]
    make_pairs(tmp_path, [f"rainy/rain-{i}.png" for i in ids], [f"norain/norain-{i}.png" for i in ids])
    ds = PairedFolder(tmp_path)
    assert ds.layout == "sian"
    assert ds.names == ["rain-3.png", "rain-20.png", "rain-100.png"]
    assert ds.pair_paths()[1][2] == tmp_path / "norain" / "norain-20.png"
    assert torch.equal(ds[1].clean, scene(1))


def side_by_side(root: Path, name: str, seed: int, *, odd: bool = False, rainy_left: bool = False) -> None:
    clean = scene(seed, 24, 32)
    rainy = rainy_of(clean, seed)
    left, right = (rainy, clean) if rainy_left else (clean, rainy)
    parts = [left, right] + ([torch.zeros(3, 24, 1)] if odd else [])
    put(root / name, torch.cat(parts, dim=2))


def test_jdnet_split_odd_width_and_swap(tmp_path: Path) -> None:
    side_by_side(tmp_path, "b.png", 1, odd=True)  # width 65: halves of 32, the last column dropped
    side_by_side(tmp_path, "a.png", 0)
    ds = PairedFolder(tmp_path, layout="jdnet")
    assert ds.layout == "jdnet" and ds.names == ["a.png", "b.png"]
    for i, pair in enumerate(ds):  # Dataset iteration stops at IndexError
        assert pair.rainy.shape == pair.clean.shape == (3, 24, 32)
        assert torch.equal(pair.clean, scene(i, 24, 32))
        assert torch.equal(pair.rainy, rainy_of(scene(i, 24, 32), i))
    assert ds.pair_paths()[0] == ("a.png", tmp_path / "a.png", tmp_path / "a.png")
    swapped = PairedFolder(tmp_path, layout="jdnet", swap_halves=True)[0]
    assert torch.equal(swapped.rainy, ds[0].clean) and torch.equal(swapped.clean, ds[0].rainy)


def test_jdnet_rain1200_convention_and_test_subfolder(tmp_path: Path) -> None:
    for i in range(3):
        side_by_side(tmp_path / "test", f"{i}.png", i, rainy_left=True)
    (tmp_path / "readme.txt").write_text("JDNet data folder")
    ds = PairedFolder(tmp_path, swap_halves=True)  # auto: images only in test/, halves show one scene
    assert ds.layout == "jdnet" and ds.names == ["0.png", "1.png", "2.png"]
    assert ds.pair_paths()[0][1] == tmp_path / "test" / "0.png"
    assert torch.equal(ds[2].clean, scene(2, 24, 32))


def test_jdnet_one_pixel_wide_image(tmp_path: Path) -> None:
    put(tmp_path / "thin.png", torch.zeros(3, 4, 1))
    ds = PairedFolder(tmp_path, layout="jdnet")
    with pytest.raises(DataError, match=r"thin\.png.*1 pixel wide"):
        ds[0]


# --------------------------------------------------------------------------------------------------- list


def test_list_layout_paths_order_and_names(tmp_path: Path) -> None:
    make_pairs(tmp_path / "data", ["rain/a.png", "rain/b.png", "rain/c.png", "rain/d.png"],
               ["gt/a.png", "gt/b.png", "gt/c.png", "gt/d.png"])
    elsewhere = tmp_path / "data"
    lst = tmp_path / "data" / "lists" / "test.txt"
    lst.parent.mkdir()
    (tmp_path / "data" / "lists" / "rain").symlink_to(tmp_path / "data" / "rain")
    (tmp_path / "data" / "lists" / "gt").symlink_to(tmp_path / "data" / "gt")
    lst.write_text(
        "# rainy clean\n"
        "rain/d.png gt/d.png   \n"  # relative to the list's folder, trailing spaces
        "\n"
        "./rain/a.png\t./gt/a.png\n"  # ./ prefix, tab separated
        "/rain/c.png /gt/c.png\n"  # SPANet: "/" + path relative to the list's folder
        f"{elsewhere / 'rain' / 'b.png'} {elsewhere / 'gt' / 'b.png'}\n"  # absolute and existing
        "   \n"
    )
    ds = PairedFolder(lst)
    assert ds.layout == "list"
    absolute = str(elsewhere / "rain" / "b.png").lstrip("/")
    assert ds.names == ["rain/d.png", "rain/a.png", "rain/c.png", absolute]
    assert ds.pair_paths()[2][1:] == (lst.parent / "rain" / "c.png", lst.parent / "gt" / "c.png")
    assert torch.equal(ds[1].clean, scene(0))
    assert torch.equal(ds[0].clean, scene(3))
    assert PairedFolder(tmp_path / "data" / "lists", list_file="test.txt", limit=2).names == ds.names[:2]
    assert PairedFolder(tmp_path, layout="list", list_file=lst).names == ds.names


def test_list_problems_are_named_by_line(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["r/a.png"], ["c/a.png"])
    lst = tmp_path / "pairs.txt"
    lst.write_text("r/a.png c/a.png\nr/missing.png c/a.png\njust-one-field.png\nr/a.png c/a.png\n"
                   "/nowhere/x.png c/a.png\n")
    with pytest.raises(DataError) as info:
        PairedFolder(lst)
    msg = str(info.value)
    assert "pairs.txt: 4 line(s)" in msg
    assert "line 2: r/missing.png not found" in msg
    assert "line 3: expected '<rainy path> <clean path>'" in msg
    assert "line 4: r/a.png is listed again (first on line 1)" in msg
    assert "line 5: /nowhere/x.png not found" in msg


def test_list_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="list file not found"):
        PairedFolder(tmp_path, list_file="nope.txt")
    with pytest.raises(InputError, match="needs the list file itself"):
        PairedFolder(tmp_path, layout="list")
    with pytest.raises(InputError, match="only used by the list layout"):
        PairedFolder(tmp_path, layout="rain-norain", list_file="x.txt")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(DataError, match="no image pairs"):
        PairedFolder(tmp_path / "empty.txt")


# ------------------------------------------------------------------------------------------ errors, detection


def test_unpairable_files_are_all_named_in_one_error(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["rain/1.png", "rain/2.png"], ["norain/1.png", "norain/2.png"])
    put(tmp_path / "rain" / "3.png", scene(3))
    put(tmp_path / "norain" / "4.png", scene(4))
    put(tmp_path / "rain" / "10.png", scene(10))
    with pytest.raises(DataError) as info:
        PairedFolder(tmp_path)
    msg = str(info.value)
    assert "3 file(s) cannot be paired (layout rain-norain)" in msg
    assert "rain/3.png (no norain/3.png)" in msg
    assert "norain/4.png (no rain/4.png)" in msg
    assert msg.index("rain/3.png") < msg.index("norain/4.png") < msg.index("rain/10.png")  # natural order


def test_many_unpairable_files_are_capped(tmp_path: Path) -> None:
    for i in range(25):
        put(tmp_path / "rainy" / f"rain-{i}.png", torch.zeros(3, 2, 2))
    put(tmp_path / "norain" / "norain-0.png", torch.zeros(3, 2, 2))
    with pytest.raises(DataError) as info:
        PairedFolder(tmp_path)
    msg = str(info.value)
    assert "24 file(s) cannot be paired (layout sian)" in msg
    assert "rainy/rain-1.png (no norain/norain-1.png)" in msg
    assert "... and 4 more" in msg and "rain-24.png" not in msg


def test_prenet_unpaired_clean_file(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["rainy/rain-1.png"], ["norain-1.png"])
    put(tmp_path / "norain-2.png", torch.zeros(3, 2, 2))
    with pytest.raises(DataError, match=r"norain-2\.png \(no rainy/rain-2\.png\)"):
        PairedFolder(tmp_path)


def test_size_mismatch_is_reported_when_loading(tmp_path: Path) -> None:
    put(tmp_path / "rain" / "a.png", torch.zeros(3, 4, 6))
    put(tmp_path / "norain" / "a.png", torch.zeros(3, 4, 5))
    ds = PairedFolder(tmp_path)
    with pytest.raises(DataError, match=r"rain/a\.png is 6x4 but its clean image .*norain/a\.png is 5x4"):
        ds[0]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        PairedFolder(tmp_path / "missing")
    with pytest.raises(DataError, match=r"cannot tell the dataset layout.*Tried: rain-norain.*0 image"):
        PairedFolder(tmp_path)
    (tmp_path / "rain").mkdir()
    (tmp_path / "norain").mkdir()
    with pytest.raises(DataError, match="no image pairs found"):
        PairedFolder(tmp_path)
    with pytest.raises(DataError, match="no image pairs found"):
        PairedFolder(tmp_path, layout="prenet")
    put(tmp_path / "x.png", torch.zeros(3, 2, 2))
    with pytest.raises(DataError, match="is a file, not a dataset folder"):
        PairedFolder(tmp_path / "x.png")
    with pytest.raises(InputError, match=r"unknown layout 'spa'.*rain-norain"):
        PairedFolder(tmp_path, layout="spa")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="limit must be a positive integer"):
        PairedFolder(tmp_path, layout="rain-norain", limit=0)
    with pytest.raises(InputError, match="swap_halves applies to the jdnet layout only"):
        PairedFolder(tmp_path / "x.png", layout="list", swap_halves=True)


def test_unrelated_images_are_not_taken_for_side_by_side_pairs(tmp_path: Path) -> None:
    for i in range(3):
        put(tmp_path / f"photo{i}.png", torch.cat([scene(i, 24, 32), scene(50 + i, 24, 32)], dim=2))
    with pytest.raises(DataError, match=r"cannot tell the dataset layout.*3 image\(s\) photo0.png"):
        PairedFolder(tmp_path)
    assert len(PairedFolder(tmp_path, layout="jdnet")) == 3  # an explicit layout is obeyed


def test_natural_key() -> None:
    names = ["rain-10.png", "rain-2.png", "Rain-3.png", "rain-1.png", "rain-01.png", "a.png"]
    expected = ["a.png", "rain-01.png", "rain-1.png", "rain-2.png", "Rain-3.png", "rain-10.png"]
    assert sorted(names, key=natural_key) == expected
    assert set(LAYOUTS) == {"auto", "rain-norain", "prenet", "sian", "jdnet", "list"}


def test_works_with_a_dataloader(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["rain/1.png", "rain/2.png"], ["norain/1.png", "norain/2.png"])
    pairs = list(DataLoader(PairedFolder(tmp_path), batch_size=None))
    assert [p.name for p in pairs] == ["1.png", "2.png"]


# ------------------------------------------------------------------------------------------ the real folders


def test_rain100l(shared_dir: Path) -> None:
    root = require_shared("data", "rain100L")
    ds = PairedFolder(root)
    assert ds.layout == "rain-norain" and len(ds) == 100
    assert ds.names == [f"{i:03d}.png" for i in range(1, 101)]
    # 480 x 320 (W x H); 34 of the pairs are portrait, 320 x 480 (the manifest lists every file's size)
    sizes = {}
    for line in (root / "manifest.tsv").read_text().splitlines()[2:]:
        _, file, *_, width, height, _ = line.split("\t")
        sizes[file] = (int(width), int(height))
    assert set(sizes.values()) == {(480, 320), (320, 480)}
    for index in (0, 7, 99):
        pair = ds[index]
        width, height = sizes[f"rain/{pair.name}"]
        assert sizes[f"norain/{pair.name}"] == (width, height)
        assert pair.rainy.shape == pair.clean.shape == (3, height, width)
        assert float(pair.rainy.min()) >= 0 and float(pair.rainy.max()) <= 1
        assert not torch.equal(pair.rainy, pair.clean)
    assert PairedFolder(root, limit=5).names == ["001.png", "002.png", "003.png", "004.png", "005.png"]


def test_real_rain_photos_have_no_detectable_layout(shared_dir: Path) -> None:
    with pytest.raises(DataError, match="cannot tell the dataset layout"):
        PairedFolder(require_shared("data", "real_rain", "rain"))


def test_a_local_mirror_of_the_data_sets_is_searched_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from derain.data import sets

    monkeypatch.setenv("DERAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DERAIN_SHARED", raising=False)
    (tmp_path / "mirror" / "rain100L").mkdir(parents=True)
    monkeypatch.setenv("DERAIN_DATA", str(tmp_path / "mirror"))
    assert sets.resolve("RAIN100l", download=False) == tmp_path / "mirror" / "rain100L"
    assert sets.local_folder(sets.SETS["rain100H"]) is None  # a mirror without the set: not there
    # the variable's former name: $DERAIN_SHARED/data/<name>, with a warning that says what to set instead
    monkeypatch.delenv("DERAIN_DATA")
    (tmp_path / "old" / "data" / "rain100L").mkdir(parents=True)
    monkeypatch.setenv("DERAIN_SHARED", str(tmp_path / "old"))
    with pytest.warns(FutureWarning, match=re.escape(f"set DERAIN_DATA={tmp_path / 'old' / 'data'} instead")):
        assert sets.mirror(sets.SETS["rain100L"]) == tmp_path / "old" / "data" / "rain100L"
    monkeypatch.delenv("DERAIN_SHARED")
    assert sets.mirror(sets.SETS["rain100L"]) is None
    with pytest.raises(DataError, match=r"rain100L: not downloaded yet"):
        sets.resolve("rain100L", download=False)
