"""The demo: the whole pipeline on a freshly generated synthetic biopsy slide.

``prostate-fast demo`` is the README's main job. It writes everything into one folder (default
``demo-out``), which it creates; a folder left by an earlier demo (it holds a ``.prostate-fast-demo``
marker) is replaced, any other existing folder is refused, so nothing of the user's is overwritten.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DemoResult", "run_demo"]

MARKER = ".prostate-fast-demo"


@dataclass
class DemoResult:
    """What the demo produced: the folder and each stage's main artefact."""

    out_dir: Path
    artefacts: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _prepare(out_dir: Path) -> Path:
    if (out_dir / MARKER).is_file():
        shutil.rmtree(out_dir)
    elif out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir}: exists and was not made by the demo; choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("made by prostate-fast demo; safe to delete\n")
    return out_dir


def run_demo(
    out_dir: str | Path = "demo-out",
    *,
    seed: int = 2018,
    width: int = 8192,
    height: int = 4096,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Generate a synthetic slide and run the available stages on it.

    Parameters
    ----------
    out_dir : path
        Folder for every output (created; an earlier demo's folder is replaced).
    seed : int
        Seed of the synthetic slide.
    width, height : int
        Level-0 size of the slide in pixels.
    log : callable
        Receives one line per step.

    Raises
    ------
    FileExistsError
        ``out_dir`` exists and was not made by the demo.
    """
    from .slide import open_slide
    from .synthetic import make_synthetic

    out = _prepare(Path(out_dir))
    result = DemoResult(out)
    t0 = time.perf_counter()
    synth = make_synthetic(out / "slides", name="biopsy", width=width, height=height, seed=seed)
    result.timings["synthetic slide"] = time.perf_counter() - t0
    result.artefacts["slide"] = synth.slide
    log(f"[1] synthetic slide  {synth.slide}  ({result.timings['synthetic slide']:.1f} s)")
    with open_slide(synth.slide) as slide:
        facts = slide.describe()
    log(
        f"    {facts['format']}, {width} x {height} px, {facts['level_count']} levels, "
        f"{facts['mpp'][0]:g} um/px, {facts['objective_power']:g}x"
    )
    return result
