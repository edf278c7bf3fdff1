"""Synthetic labs: a reproducible look per lab, measurably different colours, the default unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from prostate_fast.cli import main
from prostate_fast.synthetic import (
    DEFAULT_LAB,
    LabProfile,
    lab_profile,
    make_synthetic,
    render_region,
    synthetic_params,
)

SMALL = {"width": 1024, "height": 1024, "n_threads": 1}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stain_directions(lab: object, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit OD vectors of the haematoxylin-rich (darkest 3 %) and eosin-rich (10-40 % darkest)
    tissue pixels, the OD taken against the slide's own glass (its median colour)."""
    P = synthetic_params(2048, 1024, seed, lab=lab)
    rgb, codes = render_region(P, (0, 0), (2048, 1024))
    bg = np.median(rgb[codes == 0].reshape(-1, 3), axis=0).astype(np.float64)
    od = -np.log(np.maximum(rgb[codes > 0].astype(np.float64), 1) / bg)
    n = np.linalg.norm(od, axis=1)
    h = od[n >= np.quantile(n, 0.97)].mean(axis=0)
    e = od[(n > np.quantile(n, 0.1)) & (n < np.quantile(n, 0.4))].mean(axis=0)
    return h / np.linalg.norm(h), e / np.linalg.norm(e)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))


def test_profiles_are_reproducible_and_named() -> None:
    assert lab_profile() is DEFAULT_LAB and lab_profile("default") is DEFAULT_LAB
    assert DEFAULT_LAB.is_default and DEFAULT_LAB.scanner_lut() is None
    a = lab_profile("lab A")
    assert a == lab_profile("lab A") and a.name == "lab A" and not a.is_default
    assert a != lab_profile("lab B")
    assert lab_profile(7) == lab_profile(7) and lab_profile(7).name == "lab-7"
    assert lab_profile(a) is a
    assert 60 <= a.jpeg_quality <= 95 and 0.7 <= a.blur <= 1.8
    assert max(a.background) <= 248  # glass noise (0-7) never overflows
    assert json.loads(json.dumps(a.to_dict()))["od_h"] == list(a.od_h)


@pytest.mark.parametrize("bad", ["", "x" * 65, "tab\there", -1, 2**63, 1.5, True, b"A"])
def test_bad_lab(bad) -> None:
    with pytest.raises(ValueError, match="lab"):
        lab_profile(bad)


def test_labs_differ_in_stain_colour() -> None:
    """Between labs the stain OD directions differ several times more than between two slides of
    one lab (which differ only in geometry)."""
    labs = (None, "A", "B")
    v = {(lab, s): _stain_directions(lab, s) for lab in labs for s in (1, 2)}
    within = max(_angle(v[lab, 1][k], v[lab, 2][k]) for lab in labs for k in (0, 1))
    for a, b in ((None, "A"), (None, "B"), ("A", "B")):
        between = max(_angle(v[a, 1][k], v[b, 1][k]) for k in (0, 1))
        assert between > 2.0 and between > 5 * within, (a, b, between, within)


def test_lab_changes_the_look_not_the_geometry() -> None:
    P0, PA = synthetic_params(2048, 1024, 3), synthetic_params(2048, 1024, 3, lab="A")
    for k in ("core_polygons", "cancer_polygons"):
        assert all(
            np.array_equal(p, q) for p, q in zip(getattr(P0, k), getattr(PA, k), strict=True)
        )
    rgb0, codes0 = render_region(P0, (0, 0), (1024, 512))
    rgbA, codesA = render_region(PA, (0, 0), (1024, 512))
    assert np.array_equal(codes0, codesA) and not np.array_equal(rgb0, rgbA)


def test_default_lab_is_the_standard_look(tmp_path) -> None:
    """lab=None, "default" and DEFAULT_LAB give the same bytes, and record no lab."""
    shas = []
    for i, lab in enumerate((None, "default", DEFAULT_LAB)):
        res = make_synthetic(tmp_path / str(i), seed=4, lab=lab, **SMALL)
        shas.append([_sha(getattr(res, f)) for f in ("slide", "painted", "mask", "geojson")])
        assert "lab" not in json.loads(res.meta.read_text())
    assert shas[0] == shas[1] == shas[2]
    explicit = make_synthetic(tmp_path / "q90", seed=4, jpeg_quality=90, **SMALL)
    assert _sha(explicit.slide) == shas[0][0]


def test_same_lab_and_seed_same_bytes(tmp_path) -> None:
    a = make_synthetic(tmp_path / "a", seed=5, lab="north", **SMALL)
    b = make_synthetic(tmp_path / "b", seed=5, lab="north", **SMALL | {"n_threads": 2})
    c = make_synthetic(tmp_path / "c", seed=5, lab="south", **SMALL)
    d = make_synthetic(tmp_path / "d", seed=5, **SMALL)
    for f in ("slide", "painted", "meta"):
        assert _sha(getattr(a, f)) == _sha(getattr(b, f)), f
        assert _sha(getattr(a, f)) != _sha(getattr(c, f)), f
        assert _sha(getattr(a, f)) != _sha(getattr(d, f)), f
    assert _sha(a.mask) == _sha(d.mask)  # same truth
    meta = json.loads(a.meta.read_text())
    assert meta["lab"] == lab_profile("north").to_dict()
    assert LabProfile(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["lab"].items()}
    ) == (lab_profile("north"))


def test_cli_synth_lab(tmp_path, capsys) -> None:
    args = ["synth", "-o", str(tmp_path), "--width", "1024", "--height", "1024", "--seed", "2"]
    assert main([*args, "--name", "a", "--lab", "north"]) == 0
    assert main([*args, "--name", "b"]) == 0
    meta = json.loads((tmp_path / "a.json").read_text())
    assert meta["lab"]["name"] == "north" and "lab" not in json.loads(
        (tmp_path / "b.json").read_text()
    )
    capsys.readouterr()
    assert main([*args, "--name", "c", "--lab", ""]) == 2
    assert "lab" in capsys.readouterr().err


@pytest.mark.parametrize("lab", ["A", "B", "C", 7, 12345])
def test_lab_glass_stays_nearly_grey(lab) -> None:
    """The scanner is white-balanced on the glass: bare glass keeps a spread under 10 (as
    prostate_fast.tissue expects of real scans), the colour cast falls on the stain."""
    P = synthetic_params(2048, 1024, 1, lab=lab)
    rgb, codes = render_region(P, (0, 0), (2048, 1024))
    glass = np.median(rgb[codes == 0].reshape(-1, 3), axis=0)
    assert glass.max() - glass.min() < 10 and 225 <= glass.min(), glass
