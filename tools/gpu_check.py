"""The GPU check's measurements (run by ``tools/gpu_check.sh``, which installs what it needs).

On a synthetic slide (1 gigapixel by default, cached like the benchmarks' slides), with the study
CNN at 128 px (untrained, seeded, with a synthetic validation split to calibrate int8; or
``--model``), for each precision fp32, fp16 and int8 of the onnx engine on ``--ctx``:

* ``predict_slide`` end to end (tiles read and decoded in the background thread, as ``predict``
  does): tiles/s;
* GPU utilisation while it runs: ``nvidia-smi`` sampled every 100 ms (mean and max; n/a without
  ``nvidia-smi``);
* the share of time spent decoding: the time to only read and decode the same tiles (one thread,
  the same batches) over the predict time (near 1: decoding is the limit);
* the largest probability difference from ONNX Runtime fp32 on the CPU, on up to
  ``--reference-tiles`` tiles spread over the slide.

Then one short MXNet training (the default recipe on a synthetic 128 px dataset, 2 epochs) runs
in ``--mxnet-python`` (the venv with the ``mxnet-cuXX`` wheel) on the same ``--ctx``: whether it
runs, and its samples/s, or its last error line.

``--ctx cpu`` with a small ``--size`` is the dry run the tests use: the same code, no GPU.
Prints a table and writes ``gpu-check.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

PRECISIONS = ("fp32", "fp16", "int8")
TILE = 128


class GpuSampler:
    """``nvidia-smi`` utilisation samples (every 100 ms) between ``start`` and ``stop``."""

    def __init__(self, device: int) -> None:
        self.device = device
        self.samples: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> GpuSampler:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return self
        cmd = [exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
        self._proc = subprocess.Popen(
            [*cmd, "-i", str(self.device)], stdout=subprocess.PIPE, text=True
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def stop(self) -> dict[str, float | None]:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None}
        return {
            "gpu_util_mean": float(np.mean(self.samples)),
            "gpu_util_max": float(np.max(self.samples)),
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ctx", default="gpu(0)", help="gpu(N) (default gpu(0)) or cpu (dry run)")
    p.add_argument("--size", default="32768x32768", help="synthetic slide WxH (1.07 gigapixels)")
    p.add_argument("--model", type=Path, help="a trained model folder (default: untrained CNN)")
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="output folder")
    p.add_argument("--cache", help="synthetic slide cache (default $PF_BENCH_CACHE)")
    p.add_argument("--batch-size", type=int, help="tiles per batch (default 512 GPU, 64 CPU)")
    p.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    p.add_argument("--reference-tiles", type=int, default=1024)
    p.add_argument("--mxnet-python", help="python of the mxnet-cuXX venv (default: none)")
    p.add_argument("--train-tiles", type=int, default=128, help="training tiles per slide (x4)")
    p.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def environment(ctx: str) -> dict[str, Any]:
    import onnxruntime as ort

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "ctx": ctx,
        "cpu_cores": os.cpu_count(),
    }
    exe = shutil.which("nvidia-smi")
    if exe is not None:
        q = "--query-gpu=name,driver_version,memory.total"
        out = subprocess.run([exe, q, "--format=csv,noheader"], capture_output=True, text=True)
        env["gpu"] = out.stdout.strip() or out.stderr.strip()
    return env


def make_inputs(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    """(synthetic slide, model folder, whether the model is our untrained fixture)."""
    from _synthcache import cached_synthetic

    w, h = (int(v) for v in args.size.lower().split("x"))
    synth, _ = cached_synthetic(args.cache, width=w, height=h, seed=18, n_threads=args.threads)
    if args.model is not None:
        return synth, args.model, False
    from _tiny_dataset import make_tiny_dataset
    from _tiny_model import make_model

    folder = args.out / "model"
    if (folder / "m" / "model.json").is_file():
        return synth, folder / "m", True
    shutil.rmtree(folder, ignore_errors=True)
    ds = make_tiny_dataset(folder / "ds", size=TILE, train_slides=1, per_slide=2, val_per_slide=64)
    return synth, make_model(folder / "m", tile_size=TILE, dataset=ds), True


def decode_seconds(slide: Any, grid: Any, batch: int) -> float:
    """Time to only read and decode every tile of ``grid``, one thread, batch by batch."""
    from prostate_fast.tile import read_tiles

    t0 = time.perf_counter()
    for s in range(0, len(grid), batch):
        read_tiles(slide, grid, np.arange(s, min(s + batch, len(grid))))
    return time.perf_counter() - t0


def measure_predict(args: argparse.Namespace, synth: Any, model: Path, fixture: bool) -> dict:
    """Every precision on ``args.ctx``: tiles/s, GPU use, decode share, |Δp| from CPU fp32."""
    from prostate_fast.predict import load_model, predict_slide
    from prostate_fast.predict.core import _fill_off_tissue, glass_colour
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid, read_tiles
    from prostate_fast.tissue import detect_tissue

    gpu = args.ctx.startswith("gpu")
    batch = args.batch_size or (512 if gpu else 64)
    device = int(args.ctx[4:-1] or 0) if gpu and "(" in args.ctx else 0
    drop = {"max_auc_drop": 1.0} if fixture else {}  # untrained: int8 accuracy is meaningless
    rows: dict[str, Any] = {}
    with open_slide(synth.slide, n_threads=args.threads) as slide:
        tissue = detect_tissue(slide, n_threads=args.threads)
        grid = build_grid(slide, tissue, mpp=0.5, tile_size=TILE)
        if len(grid) == 0:
            raise SystemExit(f"gpu_check: {synth.slide}: no tissue tiles; choose a larger --size")
        n_ref = min(args.reference_tiles, len(grid))
        pick = np.unique(np.linspace(0, len(grid) - 1, n_ref).astype(np.int64))
        fill = glass_colour(slide, tissue)  # as predict does to tiles partly off tissue
        sample = _fill_off_tissue(read_tiles(slide, grid, pick), grid, pick, tissue, fill)
        cpu = load_model(model, engine="onnx", ctx="cpu", batch_size=64, n_threads=args.threads)
        reference = cpu.predict_batch(sample)
        decode_s = decode_seconds(slide, grid, batch)
        rows["slide"] = {"size": args.size, "tissue_tiles": len(grid), "decode_s": decode_s}
        for precision in PRECISIONS:
            pred = load_model(
                model,
                engine="onnx",
                ctx=args.ctx,
                precision=precision,
                batch_size=batch,
                n_threads=args.threads,
                **drop,
            )
            pred.predict_batch(sample[: min(batch, len(sample))])  # warm-up: kernels, memory
            sampler = GpuSampler(device).start()
            scores = predict_slide(pred, slide, tissue=tissue)
            util = sampler.stop()
            seconds = scores.timings["inference"]
            assert len(scores.prob) == len(grid), "predict's grid is not the check's grid"
            rows[precision] = {
                "engine": scores.engine,  # int8 found unfaithful on the slide: scored in fp32
                "providers": list(getattr(pred, "providers", ())),
                "tiles": len(grid),
                "seconds": seconds,
                "tiles_per_s": len(grid) / seconds if seconds > 0 else 0.0,
                "decode_share": decode_s / seconds if seconds > 0 else float("nan"),
                "max_abs_prob_diff_vs_cpu_fp32": float(np.abs(scores.prob[pick] - reference).max()),
                **util,
            }
            pred.close()
    return rows


def train_once(args: argparse.Namespace) -> dict[str, Any]:
    """One short MXNet training (default recipe, 2 epochs, 128 px) on ``args.ctx``: samples/s."""
    from _tiny_dataset import make_tiny_dataset

    import prostate_fast._mx as pmx
    from prostate_fast.errors import ModelError
    from prostate_fast.train import train

    folder = args.out / "train"
    shutil.rmtree(folder, ignore_errors=True)
    ds = make_tiny_dataset(folder / "ds", size=TILE, train_slides=4, per_slide=args.train_tiles)
    mx = pmx.import_mxnet(args.threads)
    t0 = time.perf_counter()
    try:
        train(ds, folder / "m", epochs=2, ctx=args.ctx, n_threads=args.threads, progress=False)
    except ModelError as exc:  # a tiny set may not learn in 2 epochs: the speed is still there
        if "did not learn" not in str(exc):
            raise
    seconds = time.perf_counter() - t0
    log = next((folder / "m").parent.glob("m*/*.csv"))  # the per-epoch log (m or m.partial)
    with log.open(newline="") as f:
        rates = [float(row["samples_per_s"]) for row in csv.DictReader(f)]
    return {"mxnet": mx.__version__, "runs": True, "samples_per_s": max(rates), "seconds": seconds}


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """``train_once`` in ``--mxnet-python`` (a child process: a failed CUDA wheel stays there)."""
    if not args.mxnet_python:
        return {"runs": False, "error": "skipped: no --mxnet-python"}
    cmd = [args.mxnet_python, __file__, "--train-only", "--ctx", args.ctx, "--out", str(args.out)]
    cmd += ["--train-tiles", str(args.train_tiles)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return {"runs": False, "error": "timed out after 180 s"}
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    return {"runs": False, "error": lines[-1] if lines else f"exit {done.returncode}"}


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(report: dict[str, Any]) -> None:
    env, slide = report["environment"], report["predict"]["slide"]
    print(f"gpu_check: {env.get('gpu', 'no GPU')}; ctx {env['ctx']}; ORT {env['onnxruntime']}")
    print(f"gpu_check: providers {', '.join(env['providers'])}")
    print(
        f"gpu_check: slide {slide['size']}, {slide['tissue_tiles']} tissue tiles, "
        f"decode only {slide['decode_s']:.2f} s"
    )
    print(
        "precision  tiles/s  GPU util mean/max  decode share  max |dp| vs CPU fp32  providers"
        "  scored by"
    )
    for p in PRECISIONS:
        r = report["predict"][p]
        util = f"{_fmt(r['gpu_util_mean'], '.0f')}/{_fmt(r['gpu_util_max'], '.0f')} %"
        print(
            f"{p:<9} {r['tiles_per_s']:8.0f}  {util:>17}  {r['decode_share']:12.2f}  "
            f"{r['max_abs_prob_diff_vs_cpu_fp32']:20.2e}  {','.join(r['providers'])}"
            f"  {r.get('engine', '?')}"
        )
    t = report["mxnet_training"]
    if t.get("runs"):
        print(f"mxnet training: runs, {t['samples_per_s']:.0f} samples/s (mxnet {t['mxnet']})")
    else:
        print(f"mxnet training: does not run: {t.get('error')}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.train_only:
        print(json.dumps(train_once(args)))
        return 0
    t0 = time.perf_counter()
    report: dict[str, Any] = {"environment": environment(args.ctx)}
    synth, model, fixture = make_inputs(args)
    report["predict"] = measure_predict(args, synth, model, fixture)
    report["mxnet_training"] = run_training(args)
    report["seconds"] = time.perf_counter() - t0
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    print(f"gpu_check: done in {report['seconds']:.0f} s; {args.out / 'gpu-check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
