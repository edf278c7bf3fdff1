"""Slide triage on unseen synthetic slides, in one lab or two: how many benign slides can wait.

Draws ``--slides`` synthetic slides (6144 x 3072, seeds from ``--seed``; every second one benign,
the others with 1 to 3 cancer regions) in each lab of ``--labs`` (``default`` is the generator's
standard look; any other name a lab profile, ``synth --lab``). The same seeds give the same tissue
in every lab. Each slide is predicted with ``--model`` (score grids saved), the first
``--calibration`` slides of a lab set its threshold, and the rest are triaged
(:func:`prostate_fast.triage.run_triage`: slide AUC, sensitivity, benign slides set aside at
100 % slide sensitivity on the calibration slides). Per lab: ``OUT/LAB/report.txt``; all labs:
``OUT/triage-check.json``; a summary line per lab is printed.

    python tools/triage_check.py --model demo-out/model -o /tmp/triage --labs default,B

The domain check is switched off for other labs' slides (it would rightly ask for a manual read).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _lab_slides(out: Path, lab: str, n: int, seed: int) -> list[tuple[Path, str]]:
    from prostate_fast.synthetic import make_synthetic

    made = []
    for i in range(n):
        cancer = 0 if i % 2 else 1 + (i // 2) % 3
        s = make_synthetic(
            out / "slides",
            name=f"{lab}-{i:02d}",
            width=6144,
            height=3072,
            seed=seed + i,
            n_cancer=cancer,
            lab=None if lab == "default" else lab,
            overwrite=True,
        )
        made.append((s.slide, "cancer" if cancer else "benign"))
    return made


def _check_lab(model: Path, out: Path, lab: str, args: argparse.Namespace) -> dict:
    from prostate_fast.predict import predict_slide
    from prostate_fast.triage import run_triage

    slides = _lab_slides(out, lab, args.slides, args.seed)
    grids = []
    for path, _ in slides:
        grid = predict_slide(model, path, ignore_domain=lab != "default")
        grids.append(grid.save(out / "scores" / f"{path.stem}-scores.npz", overwrite=True))
    truth = out / "truth.csv"
    with open(truth, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide", "label"])
        w.writerows((p.name, label) for p, label in slides)
    k = args.calibration
    report = run_triage(grids[:k], grids[k:], truth, out / "report", overwrite=True)
    return report.to_dict() | {"summary": report.summary()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model folder")
    p.add_argument("-o", "--out", type=Path, required=True, help="work folder")
    p.add_argument("--labs", default="default,B", help="labs, comma-separated")
    p.add_argument("--slides", type=int, default=28, help="slides per lab (half benign)")
    p.add_argument("--calibration", type=int, default=8, help="calibration slides per lab")
    p.add_argument("--seed", type=int, default=9000, help="seed of the first slide")
    args = p.parse_args(argv)
    results = {}
    for lab in args.labs.split(","):
        results[lab] = _check_lab(args.model, args.out / lab, lab, args)
        print(f"--- lab {lab}\n{results[lab]['summary']}", end="", flush=True)
    (args.out / "triage-check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
