"""Where ONNX Runtime spends its time on an exported model, next to PyTorch on the same image.

Exports each model (random weights, the full architecture) with ``derain.inference.export.export_onnx``, runs it
once to warm up and once under ONNX Runtime's profiler, and sums the profiler's node times by operator type. The
same image goes through PyTorch (the eager model ``derain run`` uses) for the ratio.

    python benchmarks/onnx_profile.py                          # spanet and jdnet, 480x320
    python benchmarks/onnx_profile.py --models prn spanet --size 240x160 --top 10 --json out.json

Each model runs in its own subprocess, so the printed peak RSS (export included) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def _one(model: str, height: int, width: int, threads: int) -> dict[str, object]:
    import onnxruntime as ort
    import torch

    import derain
    from derain.inference.export import export_onnx
    from derain.weights.store import LoadedWeights

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    restorer = derain.Restorer(derain.create_model(model), name=model, device="cpu")
    x = torch.rand(1, 3, height, width)
    restorer(x[..., :64, :64])  # warm-up
    t0 = time.perf_counter()
    restorer(x, tile=None, scale=1)
    torch_s = time.perf_counter() - t0

    workdir = Path(tempfile.mkdtemp())
    path = workdir / f"{model}.onnx"
    loaded = LoadedWeights(model, {}, restorer.model.state_dict(), "rgb", "", "random")
    t0 = time.perf_counter()
    export_onnx(loaded, path)
    export_s = time.perf_counter() - t0

    import onnx

    graph = onnx.load(str(path)).graph
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    plain.run(None, feed)  # warm-up
    t0 = time.perf_counter()
    plain.run(None, feed)
    ort_s = time.perf_counter() - t0
    del plain

    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "ort")
    profiled = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    profiled.run(None, feed)
    trace = json.loads(Path(profiled.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] += event["dur"] / 1e6
            calls[op] += 1
    return {"model": model, "size": f"{width}x{height}", "threads": threads, "torch_s": torch_s, "ort_s": ort_s,
            "export_s": export_s, "nodes": len(graph.node),
            "ops": sorted(({"op": op, "s": s, "calls": calls[op]} for op, s in by_op.items()),
                          key=lambda r: -float(r["s"])),  # type: ignore[arg-type]
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["spanet", "jdnet"])
    parser.add_argument("--size", default="480x320", help="WIDTHxHEIGHT")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch and ONNX Runtime intra-op threads")
    parser.add_argument("--top", type=int, default=8, help="operator types listed per model")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    results = []
    for model in args.models:
        out = subprocess.run([sys.executable, __file__, "--child", model, str(height), str(width), str(args.threads)],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{model}: failed\n{out.stderr.strip()[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        total = sum(op["s"] for op in r["ops"])
        print(f"\n{model} {r['size']}, {r['threads']} threads: PyTorch {r['torch_s']:.2f} s, ONNX Runtime "
              f"{r['ort_s']:.2f} s ({r['ort_s'] / r['torch_s']:.1f}x), {r['nodes']} graph nodes, export "
              f"{r['export_s']:.0f} s, peak RSS {r['peak_rss_gb']:.2f} GB")
        print("| operator | calls | seconds | share |\n|---|---|---|---|")
        for op in r["ops"][:args.top]:
            print(f"| {op['op']} | {op['calls']} | {op['s']:.3f} | {op['s'] / total:.0%} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
