"""What a run reports while it trains: ``log.csv`` (one row per logged or validated step), TensorBoard events when
``tensorboard`` is installed, and the progress display. Only rank 0 writes."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from derain.io.atomic import atomic_write

LOG_FIELDS = ("step", "loss", "lr", "seconds", "samples_per_s", "val_psnr", "val_ssim")


class Progress:
    """A tqdm bar of the steps on a terminal (loss, speed, last validation), or a line every ``log_every`` steps
    otherwise (logs of background runs)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", file=sys.stderr,
                            dynamic_ncols=True)
        self.t0, self.start = time.perf_counter(), start

    def update(self, step: int, loss: float, rate: float, extra: str = "") -> None:
        if not self.enabled:
            return
        text = f"loss {loss:.4f} {rate:.1f} samples/s{extra}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(step - self.bar.n)
            return
        left = (self.total - step) * (time.perf_counter() - self.t0) / max(step - self.start, 1)
        sys.stderr.write(f"step {step}/{self.total} {text} ETA {int(left) // 60}:{int(left) % 60:02d}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _drop_rows_after(path: Path, step: int) -> None:
    """Resuming at ``step``: a run that was killed hard had logged steps after its last checkpoint, which are
    about to run again; drop their rows so that the log holds each step once."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
    if len(kept) == len(rows):
        return
    with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)


class RunLog:
    """``log.csv``, TensorBoard (when installed) and the progress display; only rank 0 (``enabled``) writes.

    Each step the loop reports what it measured (:meth:`loss`, :meth:`validation`); :meth:`end_step` writes them
    as one row and moves the progress display. ``samples_per_step`` (the batch times the processes) gives the
    speed, measured since the last logged step.
    """

    def __init__(self, out: Path, *, total: int, step: int, samples_per_step: int, append: bool, enabled: bool,
                 progress: bool) -> None:
        self.file: Any = None
        self.writer: csv.DictWriter[str] | None = None
        self.tb: Any = None
        if enabled:
            path = out / "log.csv"
            append = append and path.exists()
            if append:
                _drop_rows_after(path, step)
            self.file = open(path, "a" if append else "w", newline="")  # noqa: SIM115 (closed in close())
            self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS)
            if not append:
                self.writer.writeheader()
            self.tb = _tensorboard(out)
        self.bar = Progress(total, step, progress and enabled)
        self.samples_per_step = samples_per_step
        self.row: dict[str, Any] = {}
        self.mark = (time.perf_counter(), step)
        self.val_psnr: float | None = None

    def loss(self, step: int, loss: float, lr: float, seconds: float) -> None:
        """The step's loss (the mean over processes), learning rate and training time so far."""
        now = time.perf_counter()
        rate = (step - self.mark[1]) * self.samples_per_step / max(now - self.mark[0], 1e-9)
        self.mark = (now, step)
        self.row.update({"step": step, "loss": f"{loss:.6f}", "lr": f"{lr:.3g}", "seconds": f"{seconds:.1f}",
                         "samples_per_s": f"{rate:.2f}"})

    def validation(self, step: int, val_psnr: float, val_ssim: float) -> None:
        self.val_psnr = val_psnr
        self.row.update({"step": step, "val_psnr": f"{val_psnr:.4f}", "val_ssim": f"{val_ssim:.5f}"})

    def end_step(self, step: int) -> None:
        """Write the step's row (if it logged or validated) and move the progress display (if it logged)."""
        row, self.row = self.row, {}
        if row and self.writer is not None:
            self.writer.writerow(row)
            self.file.flush()
            if self.tb is not None:
                for key in ("loss", "val_psnr", "val_ssim"):
                    if key in row:
                        self.tb.add_scalar(key, float(row[key]), int(row["step"]))
        if "loss" in row:
            extra = f" val {self.val_psnr:.2f} dB" if self.val_psnr is not None else ""
            self.bar.update(step, float(row["loss"]), float(row["samples_per_s"]), extra)

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
