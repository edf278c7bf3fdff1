"""What :func:`~prostate_fast.dataset.build_dataset` wrote: :class:`DatasetSummary`.

``to_dict()`` is the dataset's ``summary.json`` (no timings, so the file stays byte-identical for
the same inputs and seed); ``format()`` is the table the ``dataset`` command prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DatasetSummary"]


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`build_dataset` wrote (``to_dict()`` is ``summary.json``; timings are not saved).

    Attributes
    ----------
    path : pathlib.Path
        The dataset folder.
    classes : tuple of str
    splits : dict
        Split name → ``{"records", "per_class", "slides", "white_tiles", "white_kept",
        "white_records"}``: white tiles of the split's slides, kept by the white cleaning, and
        left among the records after balancing.
    white : dict
        ``{"threshold", "requested", "white_tiles", "kept", "share", "records"}`` over all
        splits (``share`` = kept / white_tiles, what ``white_keep`` requests).
    slides : dict
        Slide name → ``{"split", "patient", "tiles", "white_tiles", "white_records", "records",
        "per_class"}``.
    class_weights : list of float or None
    settings : dict
    pack_seconds : float
        Time spent reading, encoding and writing tiles.
    """

    path: Path
    classes: tuple[str, ...]
    splits: dict[str, dict[str, Any]]
    white: dict[str, Any]
    slides: dict[str, dict[str, Any]]
    class_weights: list[float] | None
    settings: dict[str, Any]
    pack_seconds: float = field(default=0.0, compare=False)

    @property
    def records(self) -> int:
        """Records in all splits."""
        return sum(s["records"] for s in self.splits.values())

    @property
    def tiles_per_second(self) -> float:
        """Packing throughput (tiles read, encoded and written per second)."""
        return self.records / self.pack_seconds if self.pack_seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly summary saved as ``summary.json`` (no timings: files stay identical)."""
        return {
            "classes": list(self.classes),
            "splits": self.splits,
            "white": self.white,
            "slides": self.slides,
            "class_weights": self.class_weights,
            "settings": self.settings,
        }

    def format(self) -> str:
        """A plain-text table: tiles per class per split, white kept, per-slide counts."""
        cls = list(self.classes)
        w = max([8, *(len(c) + 1 for c in cls)])
        head = f"{'split':<7}{'records':>9}" + "".join(f"{c:>{w}}" for c in cls)
        lines = [
            f"dataset {self.path}",
            head + f"{'white kept':>14}{'in records':>12}{'slides':>8}",
        ]
        for name, s in self.splits.items():
            white = f"{s['white_kept']}/{s['white_tiles']}"
            lines.append(
                f"{name:<7}{s['records']:>9}"
                + "".join(f"{n:>{w}}" for n in s["per_class"])
                + f"{white:>14}{s['white_records']:>12}{len(s['slides']):>8}"
            )
        wh = self.white
        lines.append(
            f"white tiles (white fraction > {wh['threshold']:g}): {wh['white_tiles']}, kept "
            f"{wh['kept']} ({100 * wh['share']:.2f} %, requested {100 * wh['requested']:.2f} %), "
            f"{wh['records']} in the records"
        )
        if self.class_weights is not None:
            lines.append("class weights: " + ", ".join(f"{v:.4g}" for v in self.class_weights))
        sw = max([6, *(len(s) + 1 for s in self.slides)])
        lines.append(
            f"{'slide':<{sw}}{'split':>6}{'tiles':>8}{'white':>7}{'in rec':>8}{'records':>9}"
            + "".join(f"{c:>{w}}" for c in cls)
        )
        for name, s in self.slides.items():
            lines.append(
                f"{name:<{sw}}{s['split']:>6}{s['tiles']:>8}{s['white_tiles']:>7}"
                f"{s['white_records']:>8}{s['records']:>9}"
                + "".join(f"{n:>{w}}" for n in s["per_class"])
            )
        if self.pack_seconds > 0:
            lines.append(
                f"packed {self.records} tiles in {self.pack_seconds:.1f} s "
                f"({self.tiles_per_second:.0f} tiles/s)"
            )
        return "\n".join(lines)
