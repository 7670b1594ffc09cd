"""The ``derain`` command: thin subcommands over the public API.

Each command parses its options, calls one library function and prints what it returns. The library checks every
choice (a device, a protocol, a layout, a style...); the help lists the library's own vocabularies. Errors derain
raises on purpose (bad input, unknown weights, unpairable data) end as one line on stderr and a non-zero exit
code, never a traceback.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

import derain
from derain.data.paired import LAYOUTS
from derain.data.synthetic import STYLE_NAMES
from derain.data.training import synthesize
from derain.device import DEVICES
from derain.errors import DerainError
from derain.evaluate import evaluate_named
from derain.inference.export import FORMATS as EXPORT_FORMATS
from derain.io.progress import FileProgress
from derain.metrics import protocol_names
from derain.train import train


def _usage_errors() -> tuple[type[Exception], ...]:
    """The exception types typer raises for bad command lines: its own base class (typer >= 0.22 bundles click)
    and click's, when click is installed (older typer versions raise click's)."""
    found = [getattr(getattr(typer, "exceptions", None), "TyperException", None)]
    with contextlib.suppress(ImportError):
        from click.exceptions import ClickException

        found.append(ClickException)
    return tuple(t for t in found if isinstance(t, type))


_USAGE_ERRORS = _usage_errors()


def _choices(valid: tuple[str, ...] | list[str]) -> str:
    return "|".join(valid)


_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s?)?")


def _duration(text: str) -> float:
    """Seconds from ``540``, ``540s``, ``90m``, ``2h`` or ``1h30m`` (what --time-limit takes)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or not any(match.groups()):
        raise typer.BadParameter(f"{text!r} is not a duration: write seconds (540) or with units (90m, 1h30m, 45s)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < 1:
        raise typer.BadParameter(f"{text!r} is under a second; give at least 1 s")
    return total


# Options several commands share, worded once.
Weights = Annotated[str, typer.Option("--weights", "-w", help="Catalog name or checkpoint path.")]
Device = Annotated[str, typer.Option(help=f"Where to run the model: {_choices(DEVICES)}.")]
Host = Annotated[str, typer.Option(help="Address the page listens on (one not on loopback needs --allow-remote).")]
AllowRemote = Annotated[bool, typer.Option("--allow-remote", help="Let --host be reachable from other machines; "
                                           "every request then needs the printed URL's token.")]
NoBrowser = Annotated[bool, typer.Option("--no-browser", help="Serve the page without opening a tab.")]

app = typer.Typer(name="derain", help="Single-image rain removal: JDNet, SIAN, SPANet, PReNet; MATLAB-exact "
                  "evaluation.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command("eval")
def eval_command(
    weights: Weights,
    data: Annotated[str, typer.Option("--data", "-d", help="Paired dataset folder, list file, or a data set's "
                                                           "name (rain100L, rain100H: fetched on first use).")],
    protocol: Annotated[str, typer.Option(help=f"Metric protocol of the paper to reproduce: "
                                               f"{_choices(protocol_names())}.")] = "matlab-y",
    quantize: Annotated[str | None, typer.Option(
        help="8-bit conversion before measuring (matlab-y): floor as PReNet saves, round as SIAN; "
             "default: the weights' own.")] = None,
    downsample: Annotated[bool, typer.Option(help="PReNet ssim.m's automatic down-sampling step.")] = False,
    layout: Annotated[str, typer.Option(help=f"Dataset layout: {_choices(LAYOUTS)}.")] = "auto",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N pairs (sorted).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write per-image rows and means here.")] = None,
    save_images: Annotated[Path | None, typer.Option(help="Save the measured outputs into this folder.")] = None,
    device: Device = "auto",
    scale: Annotated[str, typer.Option(help="Working scale: 1 (default: the papers' measurement), a whole number, "
                                            "or auto (derain run's default).")] = "1",
) -> None:
    """Measure weights on a paired dataset exactly as the papers did."""
    report = evaluate_named(weights, data, protocol=protocol, quantize=quantize, downsample=downsample,
                            layout=layout, limit=limit, device=device, save_images=save_images,
                            progress=FileProgress("eval"), scale=scale)
    typer.echo(report.table())
    if json_out is not None:
        report.write_json(json_out)
        typer.echo(f"per-image results: {json_out}")


@app.command("convert")
def convert_command(
    checkpoint: Annotated[Path, typer.Argument(help="Official checkpoint (.pth) or derain safetensors file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .safetensors file.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    float16: Annotated[bool, typer.Option("--float16", help="Store the weights as float16 (half the file size; "
                                                            "they load back as float32).")] = False,
) -> None:
    """Convert an official checkpoint to safetensors with metadata (architecture, options, channel order)."""
    weights = derain.weights.read_checkpoint(checkpoint)
    out = derain.weights.save_converted(weights, output, overwrite=overwrite, float16=float16)
    options = ", ".join(f"{k}={v}" for k, v in weights.options.items()) or "defaults"
    typer.echo(f"{checkpoint} -> {out}: {weights.name} (model {weights.model}, {options}, "
               f"{weights.channel_order.upper()}, {len(weights.state_dict)} tensors)")


@app.command("run")
def run_command(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (recursive) or glob patterns.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (or a file name for one input).")],
    weights: Weights = derain.DEFAULT_WEIGHTS,
    device: Device = "auto",
    half: Annotated[bool, typer.Option(help="float16 on a GPU (faster, slightly less exact).")] = False,
    tile: Annotated[int | None, typer.Option(min=8, help="Run in TILE x TILE windows (default: only when the "
                                                         "image would not fit in memory).")] = None,
    overlap: Annotated[int | None, typer.Option(min=0, help="Tile overlap in pixels (default: the model's).")]
    = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Output format: png, jpg, webp, tif, bmp "
                                                             "(default: the input's).")] = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG / WebP quality.")] = 95,
    save_stages: Annotated[bool, typer.Option(help="Also write every stage (NAME_stageK.png).")] = False,
    save_attention: Annotated[bool, typer.Option(help="Also write attention maps (NAME_attentionK.png).")] = False,
    compare: Annotated[bool, typer.Option(help="Also write input and output side by side (NAME_compare.png).")]
    = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs (inputs are never written).")] = False,
    scale: Annotated[str, typer.Option(help="Working scale: auto (from the image's size; images up to twice "
                                            "481x321 run as they are), 1 (always as they are), or N: the model "
                                            "sees the image shrunk N times and the rain it finds is removed at "
                                            "full resolution.")] = "auto",
    strength: Annotated[str, typer.Option(help="How much rain to remove: auto (default: the model's gate decides; "
                                               "derain.default leaves alone an image with no rain or rain it "
                                               "would only damage), or a share from 0 to 1 that overrides it: 1 "
                                               "is the network's whole output, 0 leaves the image exactly as it "
                                               "is, 0.5 removes half the rain layer.")] = "auto",
) -> None:
    """Derain images: files, folders (mirrored), globs. torchrun --nproc_per_node=N -m derain run ... splits them."""
    from derain.inference.batch import RunOptions, derain_paths

    options = RunOptions(format=fmt, quality=quality, tile=tile, overlap=overlap, save_stages=save_stages,
                         save_attention=save_attention, compare=compare, overwrite=overwrite, scale=scale,
                         strength=strength)
    name, summary, process = derain_paths(
        weights, inputs, output, device=device, half=half, options=options, progress=FileProgress("run"),
        report=lambda name, reason: typer.echo(f"derain: failed: {name}: {reason}", err=True))
    prefix = f"[rank {process.rank}/{process.world}] " if process.world > 1 else ""
    typer.echo(f"{prefix}{name}: {summary.line()}")
    if summary.failed:
        raise typer.Exit(1)


@app.command("export")
def export_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (.onnx).")],
    weights: Weights = derain.DEFAULT_WEIGHTS,
    fmt: Annotated[str, typer.Option("--format", help=f"Export format: {_choices(EXPORT_FORMATS)}.")] = "onnx",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Export a model with its weights to ONNX: RGB in [0, 1], dynamic batch, height and width."""
    from derain.inference.export import export

    start = time.perf_counter()
    out = export(weights, output, format=fmt, overwrite=overwrite)
    typer.echo(f"{weights} -> {out} ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.0f} s); "
               "input 'input' (N, 3, H, W) RGB in [0, 1], output 'output'")


@app.command("demo")
def demo_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the sample, the result and a comparison.")]
    = Path("derain-demo"),
    weights: Weights = derain.DEFAULT_WEIGHTS,
    device: Device = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace the demo's files if they exist.")] = False,
) -> None:
    """Derain the bundled sample image with the bundled default model (or --weights)."""
    r = derain.inference.run_demo(output, weights=weights, device=device, overwrite=overwrite)
    typer.echo(f"{r.weights}: derained the bundled sample in {r.seconds:.2f} s")
    typer.echo(f"  PSNR/SSIM (Y) vs the clean original: rainy {r.psnr_before:.2f} dB / {r.ssim_before:.4f} -> "
               f"derained {r.psnr_after:.2f} dB / {r.ssim_after:.4f}")
    typer.echo(f"  wrote {r.rainy}, {r.derained}, {r.comparison}")


@app.command("synth")
def synth_command(
    clean_dir: Annotated[str, typer.Argument(help="Folder of clean images, or a data set's name (bsds500: its "
                                                  "Rain100 ground truths left out).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (rain/, norain/, mask/).")],
    style: Annotated[str, typer.Option(help=f"Rain style: {_choices(STYLE_NAMES)} (light is Rain100L-like, heavy "
                                            "Rain100H-like; diverse and downpour are physical models, downpour "
                                            "its lit heavy rain; a+b draws each image from one of the two; rainmix and "
                                            "rainmix_dense need --textures).")] = "light",
    seed: Annotated[int, typer.Option(help="Seed: the same seed and file name give the same rain.")] = 0,
    textures: Annotated[str | None, typer.Option(
        help="Rain-streak textures (black background) mixed with the procedural streaks: a folder or a data "
             "set's name (rain_streaks).")] = None,
    exclude: Annotated[Path | None, typer.Option(
        help="Names to skip: a TSV with a bsds_file column (overlap_with_Rain100.tsv) or one name a line.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N images (sorted by name).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
) -> None:
    """Add synthetic rain to clean images: write a rain-norain paired folder with rain masks."""
    start = time.perf_counter()
    written = synthesize(clean_dir, output, style=style, seed=seed, textures=textures, exclude=exclude, limit=limit,
                         overwrite=overwrite)
    typer.echo(f"{len(written)} rainy/clean pairs ({style}, seed {seed}) in {output} "
               f"({time.perf_counter() - start:.1f} s)")


@app.command("train")
def train_command(
    config: Annotated[Path | None, typer.Argument(help="YAML config (configs/*.yaml); omit with --resume.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder (checkpoints, log, weights).")]
    = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a config value: --set optim.lr=1e-4 (repeatable).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this folder exactly where it stopped.")]
    = None,
    stop_after: Annotated[int | None, typer.Option(min=1, help="Stop (with a checkpoint) after N steps.")] = None,
    time_limit: Annotated[float | None, typer.Option(
        parser=_duration, metavar="DURATION",
        help="Stop (with a checkpoint) after this long: seconds (540) or 90m, 1h30m; resume later.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> int | None:
    """Train a model (one process, or every process of torchrun --nproc_per_node=N -m derain train ...)."""
    result = train(config, output, resume=resume, overrides=overrides or [], stop_after=stop_after,
                   time_limit=time_limit, progress=not quiet)
    if not result.main:
        return None
    out, cfg = result.out, result.config
    if result.finished:
        typer.echo(f"trained {cfg.model.name} for {result.step} steps in {result.seconds:.0f} s: "
                   f"{out / 'weights.safetensors'} (validation {result.val_psnr:.2f} dB, SSIM {result.val_ssim:.4f})")
        if result.best is not None and result.best[0] != result.step:
            typer.echo(f"best on validation: {out / 'best.safetensors'} (step {result.best[0]}, "
                       f"{result.best[1]:.2f} dB)")
    else:
        typer.echo(f"{'' if result.signal is None else result.signal + ': '}stopped at step {result.step} of "
                   f"{cfg.train.steps}, checkpoint saved; continue with: derain train --resume {out}")
        if result.signal is not None:
            return 128 + int(getattr(signal, result.signal))  # the shell's code for "ended by that signal"
    return None


@app.command("build-dataset")
def build_dataset_command(
    inputs: Annotated[list[Path], typer.Argument(help="Static-camera rain videos or folders of frames.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset folder.")],
    frames: Annotated[int | None, typer.Option(min=2, max=255, help="N frames per sequence (default: by rain "
                                                                    "density, 20/100/200).")] = None,
    align: Annotated[bool, typer.Option(help="Undo small global camera shifts instead of skipping the sequence.")]
    = False,
    accept_all: Annotated[bool, typer.Option(help="Accept every built sequence without review.")] = False,
    patch: Annotated[int, typer.Option(min=0, help="Also cut every pair into PATCH x PATCH training crops (0: "
                                                   "none).")] = 0,
    stride: Annotated[int | None, typer.Option(min=1, help="Pixels between patches (default: --patch).")] = None,
) -> None:
    """Real rain/clean pairs from rain videos (SPANet's method): clean image, pairs, masks, list file."""
    from derain.data.rainbuild import LIST_FILE, build_dataset
    manifest = build_dataset([str(p) for p in inputs], output, frames=frames, align=align, accept_all=accept_all,
                             patch=patch, stride=stride, progress=FileProgress("build"),
                             report=lambda name, reason: typer.echo(f"derain: skipped {name}: {reason}", err=True))
    built = [n for n, e in manifest.items() if e.built]
    typer.echo(f"{len(built)} sequence(s) built, {len(manifest) - len(built)} skipped; {output / LIST_FILE} lists the "
               "accepted ones (derain review decides)")
    for name in built:
        e = manifest[name]
        crops = f", {len(e.pairs) * len(e.patches)} patches" if e.patches else ""
        typer.echo(f"  {name}: N={e.frames_used} (density {e.density:.1%}), p={e.p:.3f}, {len(e.pairs)} pairs{crops}")


@app.command("review")
def review_command(
    dataset: Annotated[Path, typer.Argument(help="A folder made by derain build-dataset.")],
    accept: Annotated[list[str] | None, typer.Option(help="Accept this sequence (repeatable).")] = None,
    reject: Annotated[list[str] | None, typer.Option(help="Reject this sequence (repeatable).")] = None,
    rebuild: Annotated[list[str] | None, typer.Option(help="Rebuild this sequence with --more frames.")] = None,
    more: Annotated[int, typer.Option(help="Frames to add on rebuild: 10, 20 or 50.")] = 20,
    list_only: Annotated[bool, typer.Option("--list", help="Print every sequence and its decision; no page.")] = False,
    host: Host = "127.0.0.1",
    allow_remote: AllowRemote = False,
    port: Annotated[int, typer.Option(help="Port of the review page.")] = 8765,
    no_browser: NoBrowser = False,
) -> None:
    """Review built sequences: a local web page (extra "web"), or decisions given on the command line."""
    from derain.data.rainbuild import review

    sequences = review(dataset, accept=accept or [], reject=reject or [], rebuild=rebuild or [], more=more)
    if not (accept or reject or rebuild or list_only):
        from derain.web.serve import serve_review  # the web extra, imported only when a page is asked for

        serve_review(dataset, host=host, port=port, open_browser=not no_browser, allow_remote=allow_remote)
        return
    for name, (status, decision) in sequences.items():
        typer.echo(f"  {name:<24} {status:<14} {decision}")


@app.command("web")
def web_command(
    weights: Annotated[list[str] | None, typer.Option("--weights", "-w", help="Catalog name or checkpoint path "
                                                      "offered on the page (repeatable; default: derain.default).")]
    = None,
    device: Device = "auto",
    host: Host = "127.0.0.1",
    allow_remote: AllowRemote = False,
    port: Annotated[int, typer.Option(help="Port of the page.")] = 8000,
    no_browser: NoBrowser = False,
) -> None:
    """A local web page to derain your images in the browser (extra "web")."""
    from derain.web.serve import serve_derain  # the web extra, imported only when the page is asked for

    serve_derain(weights, device=device, host=host, port=port, open_browser=not no_browser,
                 allow_remote=allow_remote)


@app.command("list")
def list_command() -> None:
    """List the architectures, the weight sets and the data sets derain knows."""
    typer.echo("models:")
    for name in derain.list_models():
        typer.echo(f"  {name:<14} {derain.archs.MODELS[name].summary}")
    typer.echo("weights (derain weights list: sources, licences, sizes):")
    for state in derain.weights.hub.status():
        record = state.record
        typer.echo(f"  {record.name:<22} {record.model:<12} {state.where:<15} {record.training_data}")
    typer.echo("data sets (derain data list):")
    for name in derain.data.list_sets():
        typer.echo(f"  {name:<16} {derain.data.SETS[name].summary}")


weights_app = typer.Typer(help="Weights by name: list, fetch, verify and locate them (downloaded on first use).",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


@weights_app.command("list")
def weights_list_command() -> None:
    """Every weight set: where it is, its size, source and licence."""
    for state in derain.weights.hub.status():
        r = state.record
        size = _size(r.size if r.source else (state.path.stat().st_size if state.path else None))
        typer.echo(f"{r.name:<22} {r.model:<12} {state.where:<15} {size:>8}  {r.origin}")
        typer.echo(f"{'':<22} trained on {r.training_data}; licence: {r.license}")


@weights_app.command("fetch")
def weights_fetch_command(
    names: Annotated[list[str] | None, typer.Argument(help="Weight names (derain weights list).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every official weight set.")] = False,
) -> None:
    """Download weights into the cache now (derain does it on first use otherwise)."""
    for state in derain.weights.hub.fetch_all(names, every=every):
        typer.echo(f"{state.record.name}: {'bundled' if state.record.bundled else state.path}")


@weights_app.command("verify")
def weights_verify_command(
    names: Annotated[list[str] | None, typer.Argument(help="Weight names (default: every one present).")] = None,
) -> None:
    """Re-hash the weight files present against their pins."""
    present = [state for state in derain.weights.hub.status(names or None, check=True) if state.path is not None]
    for state in present:
        typer.echo(f"{state.record.name:<22} {'MISMATCH: ' + state.problem if state.problem else 'ok'}  {state.path}")
    if bad := sum(bool(state.problem) for state in present):
        typer.echo(f"derain: error: {bad} file(s) do not match their pins; delete them and fetch again", err=True)
        raise typer.Exit(1)


@weights_app.command("path")
def weights_path_command(name: Annotated[str, typer.Argument(help="A weight name.")]) -> None:
    """Print the local path of a weight set (downloading it first when needed)."""
    typer.echo(derain.weights.hub.locate(derain.weights.get_record(name)))


data_app = typer.Typer(help="Data sets by name: list, fetch, verify and locate them (downloaded on first use).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list_command() -> None:
    """Every data set: files, size, where it is and where it comes from."""
    from derain.data import sets

    for name in sets.list_sets():
        dataset = sets.SETS[name]
        files = sets.entries(dataset)
        local = sets.local_folder(dataset)
        where = "not downloaded" if local is None else str(local)
        total = sum(e.source.size or 0 for e in files)
        typer.echo(f"{name:<16} {len(files):>4} files {_size(total):>8}  {where}")
        typer.echo(f"{'':<16} {dataset.summary}; from {files[0].source.repo}@{files[0].source.commit[:8]}")


@data_app.command("fetch")
def data_fetch_command(
    names: Annotated[list[str] | None, typer.Argument(help="Data set names (derain data list).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every data set.")] = False,
) -> None:
    """Download data sets into the cache now (derain does it on first use otherwise)."""
    for name, folder in derain.data.sets.fetch_sets(names, every=every):
        typer.echo(f"{name}: {folder}")


@data_app.command("verify")
def data_verify_command(
    names: Annotated[list[str] | None, typer.Argument(help="Data set names (default: every one present).")] = None,
) -> None:
    """Re-hash every file of the data sets present against their manifests."""
    results = derain.data.sets.verify_sets(names)
    for name, problems in results:
        typer.echo(f"{name:<16} {'ok' if not problems else '; '.join(problems[:5])}")
    if any(problems for _, problems in results):
        raise typer.Exit(1)


@data_app.command("path")
def data_path_command(name: Annotated[str, typer.Argument(help="A data set name.")]) -> None:
    """Print the local folder of a data set (downloading it first when needed)."""
    typer.echo(derain.data.sets.resolve(name))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``derain`` console script and ``python -m derain``."""
    try:
        code = app(args=argv, prog_name="derain", standalone_mode=False)
        if isinstance(code, int) and code:
            return code
    except typer.Abort:
        typer.echo("derain: aborted", err=True)
        return 130
    except _USAGE_ERRORS as exc:  # bad command line: typer's usage message, exit code 2
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"derain: error: {exc}", err=True)
        return int(getattr(exc, "exit_code", 2))
    except DerainError as exc:
        # One line: multi-line messages (a list of unpairable files) are joined.
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        typer.echo(f"derain: error: {text}", err=True)
        return 1
    except OSError as exc:
        typer.echo(f"derain: error: {exc.filename or ''}: {exc.strerror or exc}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
