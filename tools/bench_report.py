"""The study's Table 3, measured here: run the benchmark suite (or read its JSON), write a report.

Usage::

    python tools/bench_report.py [--scale small|default|large] [--out DIR] [-- PYTEST ARGS...]
    python tools/bench_report.py --json bench-raw.json [--out DIR]       # no run: report a JSON
    python tools/bench_report.py --json new.json --compare old-report.json  # reproducibility

Without ``--json`` it runs ``pytest bench/ --benchmark-only --benchmark-json=DIR/bench-raw.json
--bench-scale SCALE`` (arguments after ``--`` are passed on, e.g. ``--benchmark-save=NAME`` or
``-k end_to_end``), then prints and saves ``DIR/bench-report.md`` and ``DIR/bench-report.json``:

* **Table 3**, per slide, from ``bench/bench_end_to_end.py``: stage | the study's time on its
  GTX 1080 workstation | the study's way here | ours here | speed-up. Baseline values marked ‡
  are extrapolated per tile from a sample (the footnote says from how many tiles).
* **Against the best alternative**: every kernel and stage, ours against the best NumPy / OpenCV
  / pyvips form and the baseline, from the stage benchmarks and the end-to-end one.
* **The study's data set**: what the preprocessing throughput measured on the same slide means
  for about 400 000 tiles (the study: about 4 hours).
* **Targets** of issue 8 (PASS / FAIL) and the machine (cores, CPU, MXNet build and features,
  OpenMP threads, load average before and after the run).

``--compare OLD`` adds the relative difference of every number against an earlier report.

The tables are built in ``tools/bench_tables.py`` (from the JSON alone); this file runs the
suite, reads the machine, renders the Markdown and compares reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "tools"))
from bench_tables import (  # noqa: E402 - tools/ is on the path only now
    e2e_stages,
    kernel_rows,
    limits,
    load_entries,
    preprocess,
    table3,
    targets,
)


# -- machine ----------------------------------------------------------------------------------
def _cpuinfo(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def loadavg() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    """Cores, CPU, memory, library versions, MXNet build and features, threads."""
    facts: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "cpu": _cpuinfo("model name") or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
    }
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        facts["memory_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    try:
        import numpy

        facts["numpy"] = numpy.__version__
        import cv2

        facts["opencv"] = cv2.__version__
        import prostate_fast

        facts["prostate_fast"] = prostate_fast.__version__
        facts["native_openmp"] = prostate_fast.native_openmp()
        from prostate_fast._mx import import_mxnet

        mx = import_mxnet()
        facts["mxnet"] = mx.__version__
        feats = mx.runtime.Features()
        facts["mxnet_features"] = sorted(k for k in feats.keys() if feats.is_enabled(k))
        facts["mxnet_omp_threads"] = os.environ.get("OMP_NUM_THREADS")
    except Exception as exc:  # noqa: BLE001 - facts are best effort
        facts["error"] = f"{type(exc).__name__}: {exc}"
    try:
        import pyvips

        facts["libvips"] = pyvips.version(0), pyvips.version(1), pyvips.version(2)
    except Exception:  # noqa: BLE001
        pass
    return facts


# -- formatting -------------------------------------------------------------------------------
def fmt_s(s: float | None) -> str:
    """Seconds for people: 0.8 ms, 2.3 s, 12 min 5 s, 3 h 45 min."""
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.0f} ms" if s >= 0.1 else f"{s * 1e3:.1f} ms"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        m, r = divmod(round(s), 60)
        return f"{m} min {r} s" if m < 10 and r else f"{s / 60:.0f} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m} min" if m else f"{h} h"


def fmt_x(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def fmt_cost(c: float | None, unit: str) -> str:
    if c is None:
        return "—"
    if unit == "tile":
        return f"{c * 1e6:,.1f} µs/tile ({1 / c:,.0f}/s)" if c < 1e-3 else f"{1 / c:,.1f} tiles/s"
    return fmt_s(c) + ("/slide" if unit == "slide" else "")


def render(report: dict[str, Any]) -> str:
    """The Markdown report."""
    t3, m = report["table3"], report["machine"]
    slide = report.get("slide") or {}
    lines = ["# Benchmark report: the study's Table 3, measured here", ""]
    if t3:
        lines += [
            f"Per slide: synthetic {slide.get('slide', '?')} px ({slide.get('slide_gp', 0):.2f} "
            f"gigapixels) at 20x, {slide.get('grid_tiles', '?')} tiles of 128 px in the full grid, "
            f"{slide.get('tissue_tiles', '?')} on tissue. The study's times are its own, on its "
            "slides and GTX 1080 workstation (2018); the baseline is its way, run here on this "
            "slide.",
            "",
            "| stage | study (GTX 1080 workstation, 2018) | baseline here | ours here | speed-up |",
            "|---|---|---|---|---|",
        ]
        notes, band = [], False
        for r in t3:
            base = fmt_s(r["baseline_s"])
            if r["extrapolated_from"]:
                base += " ‡"
                notes.append(r["extrapolated_from"])
            elif r["extrapolated_by_area"]:
                base += " §"
                band = True
            if r["removed"]:
                ours, x = f"— ({r['ours_what']})", "step removed"
            else:
                ours, x = f"{fmt_s(r['ours_s'])} ({r['ours_what']})", fmt_x(r["speedup"])
            study = fmt_s(r["study_s"]) if r["study_s"] else "—"
            lines.append(f"| {r['stage']} | {study} | {base} | {ours} | {x} |")
        lines.append("")
        if notes:
            lines.append(
                f"‡ extrapolated: timed on a random sample of {min(notes)}-{max(notes)} tiles of "
                "the slide's full grid (predict: its tissue tiles), per tile, to the whole slide."
            )
        if band:
            lines.append("§ timed on a band of the slide, scaled by area.")
    pre = report.get("preprocess")
    if pre:
        lines += [
            "",
            "## Preprocessing (tile, label, clean, pack) and the study's data set",
            "",
            f"Same slide, same run: ours {pre['ours_rate']:,.0f} full-grid tiles/s, the baseline "
            f"{pre['baseline_rate']:,.1f} tiles/s: **{pre['ratio']:,.0f}x**. For the study's data "
            f"set of about {pre['study_tiles']:,} tiles (about {fmt_s(pre['study_s'])} of "
            f"preprocessing on its workstation): the baseline here "
            f"{fmt_s(pre['baseline_study_s'])}, ours {fmt_s(pre['ours_study_s'])}. Ours skips "
            f"glass by its tissue mask ({pre['tissue_tiles']} of {pre['grid_tiles']} tiles "
            f"processed); even if all {pre['study_tiles']:,} were tissue tiles, ours would take "
            f"{fmt_s(pre['ours_study_s_all_kept'])}.",
        ]
    ks = report["kernels"]
    if ks:
        lines += [
            "",
            "## Ours against the best NumPy / OpenCV / pyvips form and the baseline",
            "",
            "| kernel or stage | ours | best alternative | baseline | vs best alt. | vs baseline |",
            "|---|---|---|---|---|---|",
        ]
        for k in ks:
            alt = fmt_cost(k["alt"], k["unit"]) + (f" ({k['alt_name']})" if k["alt_name"] else "")
            lines.append(
                f"| {k['title']} | {fmt_cost(k['ours'], k['unit'])} | {alt} | "
                f"{fmt_cost(k['baseline'], k['unit'])} | {fmt_x(k['vs_alt'])} | "
                f"{fmt_x(k['vs_baseline'])} |"
            )
    if report.get("limits"):
        lines += [
            "",
            "## Against the limit, measured in the same run",
            "",
            "| what | achieved | limit | ratio | target |",
            "|---|---|---|---|---|",
        ]
        for r in report["limits"]:
            unit = r["unit"]
            fmt = (lambda v, u=unit: f"{v:.1f} {u}") if unit != "s" else fmt_s
            ok = {True: "PASS", False: "FAIL", None: ""}[r["ok"]]
            sign = ">=" if r.get("at_least") else "<="
            target = f"{sign} {r['target']:g}x {ok}" if r["target"] else "—"
            lines.append(
                f"| {r['what']} | {fmt(r['achieved'])} | {fmt(r['limit'])} | "
                f"{r['ratio']:.2f}x | {target} |"
            )
    lines += ["", "## Targets (issue 8)", ""]
    for t in report["targets"]:
        ok = {True: "PASS", False: "FAIL", None: "not measured"}[t["ok"]]
        lines.append(f"- {ok}: {t['target']}")
    lines += [
        "",
        "## Machine",
        "",
        f"- {m.get('nproc')} cores ({m.get('cpu')}), {m.get('memory_gib', '?')} GiB, "
        f"{m.get('platform')}",
        f"- MXNet {m.get('mxnet', '?')}, features: {', '.join(m.get('mxnet_features', []))}",
        f"- OpenMP threads: OMP_NUM_THREADS={m.get('mxnet_omp_threads') or 'unset'} "
        f"(before MXNet: {m.get('OMP_NUM_THREADS')}); native OpenMP: "
        f"{m.get('native_openmp')}",
        f"- Python {m.get('python')}, numpy {m.get('numpy')}, OpenCV {m.get('opencv')}, "
        f"libvips {'.'.join(map(str, m.get('libvips', ()))) or '?'}, prostate-fast "
        f"{m.get('prostate_fast')}",
        f"- load average before / after the run: {report.get('load_before')} / "
        f"{report.get('load_after')} (more than ~0.5 per core means the numbers are "
        "disturbed)",
        f"- run: {report.get('command') or 'from ' + str(report.get('source'))}, "
        f"{fmt_s(report.get('wall_s'))}, {report.get('datetime')}, commit "
        f"{report.get('commit')}",
    ]
    if report.get("compare"):
        c = report["compare"]
        lines += [
            "",
            f"## Against {c['against']}",
            "",
            f"Largest difference: {c['max_rel'] * 100:.0f} % ({c['worst']}); median "
            f"{c['median_rel'] * 100:.0f} % over {c['n']} numbers.",
        ]
    return "\n".join(lines) + "\n"


def numbers(report: dict[str, Any]) -> dict[str, float]:
    """Every measured number of a report, by a stable name (for ``--compare``)."""
    out = {}
    for r in report.get("table3", []):
        for k in ("baseline_s", "ours_s"):
            if r.get(k):
                out[f"table3.{r['key']}.{k}"] = r[k]
    for k in report.get("kernels", []):
        for f in ("ours", "alt", "baseline"):
            if k.get(f):
                out[f"kernel.{k['title']}.{f}"] = k[f]
    return out


def compare(new: dict[str, Any], old: dict[str, Any], label: str) -> dict[str, Any] | None:
    """Relative differences |new - old| / old of the numbers both reports have."""
    a, b = numbers(new), numbers(old)
    rel = {k: abs(a[k] - b[k]) / b[k] for k in a.keys() & b.keys() if b[k] > 0}
    if not rel:
        return None
    worst = max(rel, key=rel.__getitem__)
    vals = sorted(rel.values())
    return {
        "against": label,
        "n": len(rel),
        "max_rel": rel[worst],
        "worst": worst,
        "median_rel": vals[len(vals) // 2],
        "relative": rel,
    }


def build_report(data: dict[str, Any], machine: dict[str, Any], **run: Any) -> dict[str, Any]:
    """The whole report from a pytest-benchmark JSON document."""
    entries = load_entries(data)
    e2e = e2e_stages(entries)
    pre = preprocess(e2e)
    ks = kernel_rows(entries)
    any_e2e = next(iter(e2e.values()), None)
    slide = (
        {k: any_e2e[k] for k in ("slide", "slide_gp", "grid_tiles", "tissue_tiles")}
        if (any_e2e)
        else None
    )
    return {
        "table3": table3(e2e) if e2e else [],
        "slide": slide,
        "preprocess": pre,
        "kernels": ks,
        "limits": limits(entries),
        "targets": targets(ks, pre),
        "machine": machine,
        "datetime": data.get("datetime"),
        "commit": (data.get("commit_info") or {}).get("id", "?")[:10],
        **run,
    }


def run_suite(scale: str, raw: Path, extra: list[str]) -> tuple[int, float, str]:
    """``pytest bench/ --benchmark-only`` at ``scale``, writing ``raw``; (status, seconds, cmd)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench/",
        "--benchmark-only",
        f"--bench-scale={scale}",
        f"--benchmark-json={raw}",
        "-p",
        "no:cacheprovider",
        "-q",
        *extra,
    ]
    t0 = time.perf_counter()
    status = subprocess.run(cmd, cwd=ROOT).returncode
    shown = " ".join(["pytest", *cmd[3:]])
    return status, time.perf_counter() - t0, shown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--scale",
        default=os.environ.get("PF_BENCH_SCALE", "default"),
        choices=("tiny", "small", "default", "large"),
    )
    ap.add_argument("--json", type=Path, help="report this pytest-benchmark JSON, do not run")
    ap.add_argument("--out", type=Path, default=Path("."), help="folder of the report files")
    ap.add_argument("--compare", type=Path, help="an earlier bench-report.json")
    ap.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run: dict[str, Any] = {"load_before": loadavg()}
    status = 0
    if args.json is None:
        raw = (args.out / "bench-raw.json").resolve()
        status, wall, cmd = run_suite(args.scale, raw, args.pytest_args)
        run.update(command=cmd, wall_s=wall, source=str(raw), status=status)
        if not raw.is_file():
            print(f"bench_report: pytest wrote no {raw} (exit {status})", file=sys.stderr)
            return status or 1
    else:
        raw = args.json
        run["source"] = str(raw)
    run["load_after"] = loadavg()
    report = build_report(json.loads(raw.read_text()), machine_facts(), **run)
    if args.compare:
        report["compare"] = compare(report, json.loads(args.compare.read_text()), str(args.compare))
    text = render(report)
    (args.out / "bench-report.md").write_text(text)
    (args.out / "bench-report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(text)
    print(f"bench_report: wrote {args.out / 'bench-report.md'} and bench-report.json")
    return status


if __name__ == "__main__":
    sys.exit(main())
