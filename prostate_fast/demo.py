"""The demo: the whole pipeline on a freshly generated synthetic biopsy slide.

``prostate-fast demo`` is the README's main job. It writes everything into one folder (default
``demo-out``), which it creates; a folder left by an earlier demo (it holds a ``.prostate-fast-demo``
marker) is replaced, any other existing folder is refused, so nothing of the user's is overwritten.

:func:`run_demo` is a list of five named steps, each a small function that calls one stage's public
API and returns its product with a one-line summary: :func:`_make_slides` (synthetic),
:func:`_label_slides` (tissue, tile, label), :func:`_build_dataset` (dataset),
:func:`_train_model` (train) and :func:`_screen_unseen` (synthetic, screen).
:meth:`_Demo.step` times and logs each one; the stages are imported inside their step, so
``import prostate_fast.demo`` stays light.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["DemoResult", "run_demo"]

MARKER = ".prostate-fast-demo"
_T = TypeVar("_T")

#: Tile side, epochs and network of the demo's model. The study (and every command's default) uses
#: 128 px tiles and the default recipe 30 epochs; the demo trains the default recipe's ResNet-10 on
#: 64 px tiles at the same 20x for 12 epochs, so that it runs in about two minutes on 2 CPU cores.
#: (At 32 px a tile sees only part of a gland's ring of nuclei and benign glands pass for cancer.)
#: Its augmentation is flips and turns only: every demo slide comes from one synthetic lab, and
#: the recipe's colour jitter (for slides from other labs) cost the short run its specificity.
DEMO_TILE_SIZE = 64
DEMO_EPOCHS = 12
DEMO_NETWORK = "resnet10"
#: The demo keeps the study's screening point: its stored threshold reaches 99 % tile sensitivity
#: on the validation slide (the default recipe's 95 % is for real tissue, where the classes overlap
#: more; see README, ``train``).
DEMO_TARGET_SENSITIVITY = 0.99


@dataclass
class DemoResult:
    """What the demo produced: the folder and each stage's main artefact."""

    out_dir: Path
    artefacts: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)


def _prepare(out_dir: Path) -> Path:
    """Empty ``out_dir`` for the demo: an earlier demo's folder (marker, and nothing in it that
    prostate-fast did not write) is removed; any other existing folder or file is refused."""
    from . import screen  # noqa: F401 - registers worklist.csv's header as ours (a fresh process)
    from ._outputs import remove_output, written_by_us

    if out_dir.is_dir() and not out_dir.is_symlink() and not any(out_dir.iterdir()):
        pass  # an empty folder is filled
    elif (out_dir / MARKER).is_file() and not out_dir.is_symlink() and written_by_us(out_dir):
        remove_output(out_dir)
    elif out_dir.exists() or out_dir.is_symlink():
        raise FileExistsError(
            f"{out_dir}: exists and was not made by the demo (or holds files it did not write); "
            "choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("made by prostate-fast demo; safe to delete\n")
    return out_dir


def _stage(result: DemoResult, name: str, t0: float, log: Callable[[str], None], text: str) -> None:
    result.timings[name] = time.perf_counter() - t0
    log(f"{text}  ({result.timings[name]:.1f} s)")


def run_demo(
    out_dir: str | Path = "demo-out",
    *,
    seed: int = 2018,
    width: int = 6144,
    height: int = 3072,
    n_train: int = 4,
    epochs: int = DEMO_EPOCHS,
    tile_size: int = DEMO_TILE_SIZE,
    network: str = DEMO_NETWORK,
    n_threads: int | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the study's pipeline end to end on synthetic slides.

    1. ``n_train`` training slides and one validation slide, each with a painted copy;
    2. tissue detection and 20x tiles over the tissue (``tile_size`` px: 64 for the demo, the
       study's 128 otherwise); labels from the painted copies (the study's way:
       difference, threshold, marker colour; >= 5 % marked = cancer);
    3. a dataset: white tiles dropped (2 % kept), every other tile kept, split by slide, packed as
       RecordIO;
    4. the default training recipe (:mod:`prostate_fast.train.recipes`: class weights,
       standardised input, augmentation, AUC selection) on ``network`` for ``epochs`` epochs, its
       cancer threshold chosen on the validation slide for 99 % sensitivity;
    5. two unseen slides, one with cancer and one benign, screened: overlay TIFF, thumbnail,
       QuPath GeoJSON, scores, and the worklist ranking them;
    6. the screen checked against the unseen slides' truth masks at the stored threshold: each
       slide's flagged share and the pooled tile sensitivity and specificity
       (:attr:`DemoResult.truth`).

    Parameters
    ----------
    out_dir : path
        Folder for every output (created; an earlier demo's folder is replaced).
    seed : int
        Seed of the first synthetic slide; the others use the following seeds.
    width, height : int
        Level-0 size of each synthetic slide in pixels (0.5 um/px, 20x).
    n_train : int
        Number of training slides.
    epochs : int
        Training epochs.
    tile_size : int
        Tile side in pixels at 20x.
    network : str
        The network trained (``prostate_fast.model.networks.NETWORKS``).
    n_threads : int, optional
        Threads for the kernels and MXNet (None = all cores).
    log : callable
        Receives one line per step.

    Raises
    ------
    FileExistsError
        ``out_dir`` exists and was not made by the demo.
    """
    if n_train < 1 or epochs < 1:
        raise ValueError(f"n_train and epochs must be >= 1, got {n_train}, {epochs}")
    out = _prepare(Path(out_dir))
    demo = _Demo(out, DemoResult(out), seed, width, height, tile_size, network, n_threads, log)
    names = [f"train-{i + 1}" for i in range(n_train)] + ["val-1"]
    slides = demo.step("slides", _make_slides, names)
    tables = demo.step("labels", _label_slides, slides)
    demo.step("dataset", _build_dataset, tables, names)
    model_dir = demo.step("train", _train_model, epochs)
    rows, tests = demo.step("screen", _screen_unseen, model_dir)
    _report_worklist(demo, rows)
    demo.step("truth", _check_truth, rows, tests)
    return demo.result


@dataclass(frozen=True)
class _Demo:
    """One demo run: its folder, the options every step shares, and what it produced so far."""

    out: Path
    result: DemoResult
    seed: int
    width: int
    height: int
    tile_size: int
    network: str
    n_threads: int | None
    log: Callable[[str], None]

    def step(self, name: str, fn: Callable[..., tuple[_T, str]], *args: Any) -> _T:
        """Run ``fn(self, *args)``, which returns its product and its summary line; log and time it."""
        t0 = time.perf_counter()
        value, text = fn(self, *args)
        _stage(self.result, name, t0, self.log, text)
        return value


def _make_slides(demo: _Demo, names: list[str]) -> tuple[list[Any], str]:
    """[1] The training and validation slides, each with its painted copy."""
    from .synthetic import make_synthetic

    slides = [
        make_synthetic(
            demo.out / "slides", name=n, width=demo.width, height=demo.height, seed=demo.seed + i
        )
        for i, n in enumerate(names)
    ]
    return slides, f"[1] {len(slides)} synthetic slides with painted copies"


def _label_slides(demo: _Demo, slides: list[Any]) -> tuple[list[Path], str]:
    """[2] Tissue, the tile grid and the painted-copy labels of every slide; the label tables."""
    from .label import label_tiles
    from .slide import open_slide
    from .tile import build_grid
    from .tissue import detect_tissue

    tables = []
    for s in slides:
        with open_slide(s.slide, n_threads=demo.n_threads) as slide:
            tissue = detect_tissue(slide, n_threads=demo.n_threads)
            grid = build_grid(slide, tissue, tile_size=demo.tile_size)
            table = label_tiles(slide, s.painted, grid, n_threads=demo.n_threads)
        tables.append(table.save(demo.out / "labels" / f"{s.slide.stem}.npz"))
        counts = ", ".join(f"{(table.label == k).sum()} {c}" for k, c in enumerate(table.classes))
        demo.log(f"    {s.slide.name}: {len(grid)} tissue tiles ({counts})")
    return tables, f"[2] tissue, {demo.tile_size} px tiles at 20x, painted labels"


def _build_dataset(demo: _Demo, tables: list[Path], names: list[str]) -> tuple[None, str]:
    """[3] The balanced RecordIO dataset, split by slide (the last slide validates)."""
    from .dataset import build_dataset

    summary = build_dataset(
        tables,
        demo.out / "dataset",
        split={"train": names[:-1], "val": names[-1:]},
        balance="all",
        seed=demo.seed,
        n_threads=demo.n_threads,
    )
    demo.result.artefacts["dataset"] = demo.out / "dataset"
    return None, f"[3] dataset: {summary.records} records, every tile kept (class weights balance)"


def _train_model(demo: _Demo, epochs: int) -> tuple[Path, str]:
    """[4] The default recipe, shortened for the demo; its threshold chosen on the val slide.
    MXNet's native INFO lines (two per epoch) go to ``train-mxnet.log``, not the terminal."""
    from ._mx import native_log_to
    from .train import train

    with native_log_to(demo.out / "train-mxnet.log"):
        trained = train(
            demo.out / "dataset",
            demo.out / "model",
            network=demo.network,
            augment="flips",
            epochs=epochs,
            target_sensitivity=DEMO_TARGET_SENSITIVITY,
            seed=demo.seed,
            n_threads=demo.n_threads,
            progress=False,
            log=lambda line: None,
        )
    best = trained.best
    demo.result.artefacts["model"] = trained.model_dir
    return trained.model_dir, (
        f"[4] {demo.network}, {epochs} epochs (default recipe): best epoch {trained.best_epoch}, "
        f"validation AUC {best.get('val_auc', float('nan')):.3f}, cancer threshold "
        f"{trained.threshold:.3g} (sensitivity {DEMO_TARGET_SENSITIVITY:g} on the val slide)"
    )


def _screen_unseen(demo: _Demo, model_dir: Path) -> tuple[list[Any], str]:
    """[5] Two unseen slides, one with cancer and one benign, screened into a worklist."""
    from .screen import ScreeningOptions, screen_slides
    from .synthetic import make_synthetic

    size = {"width": demo.width, "height": demo.height}
    tests = [
        make_synthetic(
            demo.out / "slides", name="unseen-cancer", seed=demo.seed + 100, n_cancer=2, **size
        ),
        make_synthetic(
            demo.out / "slides", name="unseen-benign", seed=demo.seed + 101, n_cancer=0, **size
        ),
    ]
    worklist = demo.out / "worklist.csv"
    rows = screen_slides(
        model_dir,
        [t.slide for t in reversed(tests)],
        demo.out / "screen",
        ScreeningOptions(n_threads=demo.n_threads),
        worklist=worklist,
    )
    demo.result.artefacts["worklist"] = worklist
    return (rows, tests), "[5] screening of two unseen slides"


def _report_worklist(demo: _Demo, rows: list[Any]) -> None:
    """Log the worklist, one line per screened slide in rank order; record the overlays."""
    for row in rows:
        demo.log(
            f"    #{row.rank} {row.slide}: {row.n_positive}/{row.n_tiles} tiles over threshold, "
            f"top p={row.top_probability:.3f}  overlay {row.overlay}"
        )
        demo.result.artefacts[f"overlay:{row.slide}"] = Path(row.overlay)
    demo.log(f"    worklist: {demo.result.artefacts['worklist']}")


def _check_truth(demo: _Demo, rows: list[Any], tests: list[Any]) -> tuple[dict[str, Any], str]:
    """[6] The screen against the unseen slides' own truth masks (the generator's), at the
    model's stored threshold: each slide's flagged share and the pooled tile sensitivity and
    specificity (a tile is cancer when the truth covers >= 5 % of it, as in training)."""
    from .label import label_tiles
    from .metrics import confusion
    from .predict import load_score_grid
    from .slide import open_slide

    truths, flagged = [], []
    by_name = {t.slide.name: t for t in tests}
    for row in rows:
        grid = load_score_grid(row.scores)
        made = by_name[grid.slide_name]
        with open_slide(made.slide, n_threads=demo.n_threads) as slide:
            table = label_tiles(
                slide, made.mask, _score_tiles(slide, grid), n_threads=demo.n_threads
            )
        truths.append(table.label > 0)
        flagged.append(grid.predicted > 0)
        demo.log(
            f"    {grid.slide_name}: {int(flagged[-1].sum())} of {len(grid)} tiles flagged "
            f"({flagged[-1].mean():.1%}); truth: {int(truths[-1].sum())} cancer tiles"
        )
    c = confusion(np.concatenate(truths), np.concatenate(flagged))
    facts = {"sensitivity": c.sensitivity, "specificity": c.specificity, "n_tiles": c.n}
    demo.result.truth = facts
    return facts, (
        f"[6] against the truth masks, pooled over {c.n} tiles: sensitivity "
        f"{c.sensitivity:.3f}, specificity {c.specificity:.3f}"
    )


def _score_tiles(slide: Any, grid: Any) -> Any:
    """The tile grid of a score grid's tiles (same level, size, stride and positions)."""
    from .tile import full_grid

    full = full_grid(slide, slide.choose_level(magnification=20.0), grid.tile_size, grid.stride)
    keep = np.ravel_multi_index(tuple(grid.tile_rc.T), full.grid_shape)
    index = np.ravel_multi_index(tuple(full.tile_rc.T), full.grid_shape)
    return full.subset(np.searchsorted(index, keep))
