"""The ``derain`` command: thin subcommands over the public API.

Errors derain raises on purpose (bad input, unknown weights, unpairable data) end as one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import click
import typer

import derain
from derain.errors import DerainError

app = typer.Typer(
    name="derain",
    help="Single-image rain removal: JDNet, SIAN, SPANet, PReNet; MATLAB-exact evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Protocol(str, Enum):
    matlab_y = "matlab-y"
    torch_rgb = "torch-rgb"
    skimage_legacy = "skimage-legacy"


class Quantize(str, Enum):
    floor = "floor"
    round = "round"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Layout(str, Enum):
    auto = "auto"
    rain_norain = "rain-norain"
    prenet = "prenet"
    sian = "sian"
    jdnet = "jdnet"
    list = "list"


class _Progress:
    """A one-line progress bar with ETA on a terminal; silent otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.perf_counter()
        self.enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (total - done)
        bar = "#" * (24 * done // total)
        sys.stderr.write(f"\r{self.label} [{bar:<24}] {done}/{total} {name[:20]:<20} ETA {eta:5.0f}s")
        if done == total:
            sys.stderr.write("\r" + " " * 90 + "\r")
        sys.stderr.flush()


@app.command("eval")
def eval_command(
    weights: Annotated[str, typer.Option("--weights", "-w", help="Catalog name or checkpoint path.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Paired dataset folder or list file.")],
    protocol: Annotated[Protocol, typer.Option(help="Metric protocol of the paper to reproduce.")] = Protocol.matlab_y,
    quantize: Annotated[Quantize | None, typer.Option(
        help="8-bit conversion before measuring (matlab-y): floor as PReNet saves, round as SIAN; "
             "default: the weights' own.")] = None,
    downsample: Annotated[bool, typer.Option(help="PReNet ssim.m's automatic down-sampling step.")] = False,
    layout: Annotated[Layout, typer.Option(help="Dataset layout.")] = Layout.auto,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N pairs (sorted).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write per-image rows and means here.")] = None,
    save_images: Annotated[Path | None, typer.Option(help="Save the measured outputs into this folder.")] = None,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.auto,
) -> None:
    """Measure weights on a paired dataset exactly as the papers did."""
    dataset = derain.data.PairedFolder(data, layout=layout.value, limit=limit)
    restorer = derain.load(weights, device=device.value)
    report = derain.evaluate(
        restorer, dataset, protocol=protocol.value, quantize=quantize.value if quantize else None,
        downsample=downsample, save_images=save_images, progress=_Progress("eval"),
    )
    typer.echo(report.table())
    if json_out is not None:
        report.write_json(json_out)
        typer.echo(f"per-image results: {json_out}")


@app.command("convert")
def convert_command(
    checkpoint: Annotated[Path, typer.Argument(help="Official checkpoint (.pth) or derain safetensors file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .safetensors file.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Convert an official checkpoint to safetensors with metadata (architecture, options, channel order)."""
    weights = derain.weights.read_checkpoint(checkpoint)
    out = derain.weights.save_converted(weights, output, overwrite=overwrite)
    options = ", ".join(f"{k}={v}" for k, v in weights.options.items()) or "defaults"
    typer.echo(f"{checkpoint} -> {out}: {weights.name} (model {weights.model}, {options}, "
               f"{weights.channel_order.upper()}, {len(weights.state_dict)} tensors)")


@app.command("list")
def list_command() -> None:
    """List the architectures and the weight sets derain knows."""
    typer.echo("models:")
    for name in derain.list_models():
        typer.echo(f"  {name:<14} {derain.archs.MODELS[name].summary}")
    typer.echo("weights:")
    for name in derain.list_weights():
        record = derain.weights.get_record(name)
        kind = "bundled" if record.bundled else "official, bring your own file"
        typer.echo(f"  {name:<22} {record.model:<12} {record.training_data} ({kind})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``derain`` console script and ``python -m derain``."""
    try:
        app(args=argv, prog_name="derain", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        typer.echo("derain: aborted", err=True)
        return 130
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
