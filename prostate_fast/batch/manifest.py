"""The batch manifest (one owner): what a slide's output folder was made from, and whether it is done.

``out_dir/<stem>/manifest.json`` records the slide (path, name, size, mtime, sha256), the model
files' sha256, the settings (:func:`settings`: the :class:`~prostate_fast.screen.ScreeningOptions`
that change an output, with the model's thresholds filled in), the package version, every output
file with its size and sha256, the worklist row's numbers (and ``row_sha256``, a digest of those
numbers and the outputs' checksums) and the timings. :func:`complete` decides from it whether a
rerun may skip the slide; :func:`row_from_manifest` gives the skipped slide its worklist row back.

The row is not taken on trust: a manifest whose numbers do not match its ``row_sha256`` is not
complete (the slide is redone), and with ``verify`` the numbers are recomputed from the stored
score grid (:func:`~prostate_fast.screen.cancer_score` of ``-scores.npz``) and must match.

The settings keep the keys and values older versions wrote (``level`` appears only when one is
set), so the folders of an earlier batch are still recognised.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from .._util import atomic_path
from ..errors import ProstateFastError

__all__ = ["MANIFEST", "complete", "read_manifest", "settings", "write_manifest"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "prostate-fast batch manifest"
MANIFEST_VERSION = 1
OUTPUT_KEYS = ("overlay", "thumbnail", "geojson", "scores")
ROW_NUMBERS = (
    "n_tiles",
    "n_positive",
    "positive_share",
    "positive_area_mm2",
    "top_probability",
    "top10_mean",
    "score",
    "seconds",
)
#: The row numbers recomputed from the score grid with ``verify`` (``seconds`` is not one).
SCORE_NUMBERS = ROW_NUMBERS[:-1]


def sha256(path: Path) -> str:
    """Hex sha256 of a file, streamed in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def model_identity(model_dir: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Checksums of a model's files, and its thresholds (ModelError on a bad folder)."""
    from ..model import read_model_info

    info = read_model_info(model_dir)  # ModelError on a bad folder, before any worker starts
    paths = (model_dir / "model.json", info.symbol_file, info.params_file)
    files = {p.name: sha256(p) for p in paths}
    whole = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"path": str(model_dir), "files": files, "sha256": whole}, dict(info.thresholds)


def settings(options: Any, model_thresholds: Mapping[str, float]) -> dict[str, Any]:
    """The manifest's ``settings`` of a :class:`~prostate_fast.screen.ScreeningOptions`.

    The effective values, defaults spelt out, as JSON gives them back: engine, ctx, batch_size,
    mpp, the thresholds (the model's, with the options' applied), the overlay's look, and
    ``level``, ``ignore_domain`` and ``ignore_scale`` when set. Threads are not in it: they do
    not change an output.
    """
    out = {
        "engine": options.engine,
        "ctx": str(options.ctx),
        "batch_size": int(options.batch_size),
        "mpp": options.mpp,
        "thresholds": {**model_thresholds, **dict(options.thresholds)},
        "overlay": options.overlay_look(),
    }
    if options.level is not None:
        out["level"] = options.level
    if options.precision != "fp32":  # absent for fp32: manifests written before stay current
        out["precision"] = options.precision
    for key in ("ignore_domain", "ignore_scale"):
        if getattr(options, key, False):
            out[key] = True
    return json.loads(json.dumps(out, sort_keys=True))


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``manifest.json`` of a slide's output folder, or None when missing or unreadable."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT
    return m if ok and m.get("version") == MANIFEST_VERSION else None


def write_manifest(folder: Path, manifest: Mapping[str, Any], *, atomic: bool = False) -> None:
    """Write ``folder/manifest.json`` (through a temporary name when ``atomic``)."""
    text = json.dumps(manifest, indent=1) + "\n"
    if not atomic:
        (folder / MANIFEST).write_text(text, encoding="utf-8")
        return
    with atomic_path(folder / MANIFEST, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def new_manifest(**fields: Any) -> dict[str, Any]:
    """A manifest with its format, version and the package version, then ``fields``.

    With ``row`` and ``outputs`` among the fields, ``row_sha256`` (:func:`row_digest`) is added.
    """
    head = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "package_version": __version__}
    m = head | fields
    if "row" in m and "outputs" in m:
        m["row_sha256"] = row_digest(m["row"], m["outputs"])
    return m


def row_digest(row: Mapping[str, Any], outputs: Mapping[str, Any]) -> str:
    """sha256 of the row's numbers and the outputs' checksums, as JSON gives them back."""
    data = {"row": {k: row.get(k) for k in ROW_NUMBERS}, "outputs": outputs}
    text = json.dumps(json.loads(json.dumps(data)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _row_matches(m: Mapping[str, Any], folder: Path, verify: bool) -> bool:
    """The manifest's row numbers match its digest (when recorded) and, with ``verify``, the
    numbers recomputed from the stored score grid."""
    if "row_sha256" in m and m["row_sha256"] != row_digest(m["row"], m["outputs"]):
        return False
    if not verify:
        return True
    scores = m["outputs"].get("scores")
    if scores is None:
        return False
    from ..predict.scoregrid import load_score_grid
    from ..screen import cancer_score

    try:
        got = cancer_score(load_score_grid(folder / str(scores["file"])))
    except (OSError, ValueError, ProstateFastError):
        return False
    for key in SCORE_NUMBERS:
        want, have = m["row"].get(key), got[key]
        if (want is None) != (have is None):
            return False
        if have is not None and not math.isclose(
            float(want), float(have), rel_tol=1e-6, abs_tol=1e-9
        ):
            return False
    return True


def complete(
    folder: Path,
    task: Any,
    source: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The manifest of ``folder`` if its outputs are complete and match ``task`` (else None).

    ``task`` gives the slide, the model's identity, the settings and ``verify`` (hash the
    outputs too). ``source`` (size, sha256) compares the slide's content; without it, the slide's
    path, size and mtime must equal the recorded ones (the cheap check, no hashing). A damaged
    manifest means "not complete".
    """
    m = read_manifest(folder)
    try:
        want = (__version__, task.model["sha256"], task.settings)
        if m is None or (m["package_version"], m["model"]["sha256"], m["settings"]) != want:
            return None
        if not _same_source(m["source"], task.slide, source):
            return None
        outputs = m["outputs"]
        if not outputs or not isinstance(m["row"], dict):
            return None
        for out in outputs.values():
            name = str(out["file"])
            p = folder / name  # a plain file name, present, with its recorded size (and sha256)
            if not name or Path(name).name != name or not p.is_file():
                return None
            if p.stat().st_size != out["size"] or (task.verify and sha256(p) != out["sha256"]):
                return None
        if not _row_matches(m, folder, task.verify):
            return None
    except (KeyError, TypeError, AttributeError, OSError, ValueError):
        return None
    return m


def _same_source(rec: Mapping[str, Any], slide: str, source: Mapping[str, Any] | None) -> bool:
    if source is not None:
        return (rec["size"], rec["sha256"]) == (source["size"], source["sha256"])
    st = os.stat(slide)
    return (rec["path"], rec["size"], rec["mtime_ns"]) == (slide, st.st_size, st.st_mtime_ns)


def row_from_manifest(m: Mapping[str, Any], folder: Path, slide: Path) -> Any:
    """The worklist row of a slide skipped because ``folder`` (with manifest ``m``) is complete."""
    from ..screen import WorklistRow, scored_status

    files = {k: str(folder / v["file"]) for k, v in m["outputs"].items()}
    nums = {k: m["row"][k] for k in ROW_NUMBERS if k in m["row"]}
    status = scored_status(int(nums.get("n_tiles", 1)))
    outputs = {k: files.get(k, "") for k in OUTPUT_KEYS}
    return WorklistRow(rank=0, slide=slide.name, status=status, path=str(slide), **outputs, **nums)
