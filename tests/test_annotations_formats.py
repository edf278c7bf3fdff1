"""Annotation files from other labs: Aperio layer names, mask schemes, QuPath detections round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prostate_fast.cli import main
from prostate_fast.errors import AnnotationError
from prostate_fast.label import ClassMap
from prostate_fast.label.annotation import load_aperio_xml
from prostate_fast.label.classes import scheme_codes
from prostate_fast.label.table import load_label_table

_REGION = (
    '<Region Id="{i}" Type="0"><Vertices><Vertex X="{x0}" Y="{y0}"/><Vertex X="{x1}" Y="{y0}"/>'
    '<Vertex X="{x1}" Y="{y1}"/><Vertex X="{x0}" Y="{y1}"/></Vertices></Region>'
)


def _aperio(path: Path, layers: list[tuple[str, str]]) -> Path:
    """``layers``: (attributes of <Annotation>, inner <Attributes> XML) per layer."""
    body = "".join(
        f'<Annotation Id="{i + 1}" {attrs}><Attributes>{inner}</Attributes><Regions>'
        + _REGION.format(i=i, x0=100 + 300 * i, y0=100, x1=300 + 300 * i, y1=300)
        + "</Regions></Annotation>"
        for i, (attrs, inner) in enumerate(layers)
    )
    path.write_text(f'<Annotations MicronsPerPixel="0.5">{body}</Annotations>')
    return path


def test_aperio_attribute_name_becomes_the_class(tmp_path: Path) -> None:
    """A TCGA-PRAD export: empty layer name, <Attribute Name="CaP" Value=""/>."""
    path = _aperio(tmp_path / "a.xml", [('Name=""', '<Attribute Name="CaP" Id="0" Value=""/>')])
    assert [q.name for q in load_aperio_xml(path).polygons] == ["CaP"]
    named = _aperio(tmp_path / "b.xml", [('Name="Tumor"', '<Attribute Name="CaP" Value="x"/>')])
    assert [q.name for q in load_aperio_xml(named).polygons] == ["Tumor"]
    valued = _aperio(
        tmp_path / "c.xml", [('Name=""', '<Attribute Name="Description" Value="G4"/>')]
    )
    assert [q.name for q in load_aperio_xml(valued).polygons] == ["G4"]


def test_aperio_unnamed_layers_are_never_merged(tmp_path: Path) -> None:
    default = '<Attribute Name="Description" Id="0" Value=""/>'
    one = _aperio(tmp_path / "one.xml", [('Name=""', default)])
    assert [q.name for q in load_aperio_xml(one).polygons] == [None]  # the only class, as before
    path = _aperio(tmp_path / "three.xml", [('Name=""', default)] * 3)
    names = [q.name for q in load_aperio_xml(path).polygons]
    assert names == ["layer 1", "layer 2", "layer 3"]
    with pytest.raises(AnnotationError, match="--class-alias 'layer 1=CLASS'"):
        ClassMap.create().resolve("layer 1", path)
    cmap = ClassMap.parse("cancer", aliases="layer 1=cancer;layer 2=benign;layer 3=ignore")
    assert [cmap.resolve(n, path) for n in names] == [1, 0, None]


def test_label_list_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    default = '<Attribute Name="Description" Id="0" Value=""/>'
    path = _aperio(
        tmp_path / "x.xml",
        [
            ('Name=""', '<Attribute Name="CaP" Value=""/>'),
            ('Name=""', default),
            ('Name=""', default),
        ],
    )
    argv = ["label", "--list-classes", str(path), "--class-alias", "layer 3=ignore"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "'CaP': 1 polygon(s) -> not in the class map: --class-alias 'CaP=CLASS'" in out
    assert "'layer 2': 1 polygon(s) -> not in the class map" in out
    assert "'layer 3': 1 polygon(s) -> ignored" in out
    assert main(["label", "--list-classes", str(tmp_path / "missing.xml")]) == 2


def test_mask_schemes() -> None:
    names = ("benign", "cancer")
    assert scheme_codes("prostate-fast", names) is None
    assert scheme_codes("panda-karolinska", names) == {0: None, 1: "benign", 2: "cancer"}
    assert scheme_codes("panda-radboud", names)[5] == "cancer"
    grades = ("benign", "gleason5", "gleason4", "gleason3")
    assert scheme_codes("panda-radboud", grades) == {
        0: None, 1: "benign", 2: "benign", 3: "gleason3", 4: "gleason4", 5: "gleason5",
    }  # fmt: skip
    with pytest.raises(ValueError, match="needs a 'cancer' class"):
        scheme_codes("panda-karolinska", grades)
    with pytest.raises(ValueError, match="mask scheme must be one of"):
        scheme_codes("panda", names)
    with pytest.raises(ValueError, match="not both"):
        ClassMap.parse("cancer", codes="0=ignore", scheme="panda-radboud")


def _mask_label(syn, tmp_path: Path, codes: np.ndarray, *extra: str) -> int:
    import cv2

    mask = tmp_path / "m.png"
    cv2.imwrite(str(mask), codes.astype(np.uint8))
    out = tmp_path / "t.npz"
    argv = ["label", str(syn.slide), "--mask", str(mask), "-o", str(out), "--overwrite", *extra]
    return main(argv)


def test_mask_codes_error_and_radboud_scheme(
    synthetic_small, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    truth = synthetic_small.truth_mask()  # 0 glass, 1 benign, 2 cancer
    radboud = np.where(truth == 2, 4, truth)  # cancer drawn as Gleason 4
    assert _mask_label(synthetic_small, tmp_path, radboud) == 2
    err = capsys.readouterr().err
    assert "mask codes [4] are not in the code map [0, 1, 2]" in err
    assert "--mask-codes '0=ignore,1=benign,2=cancer,4=CLASS'" in err
    assert "--mask-scheme panda-radboud|panda-karolinska" in err
    assert _mask_label(synthetic_small, tmp_path, radboud, "--mask-scheme", "panda-radboud") == 0
    with_scheme = load_label_table(tmp_path / "t.npz")
    assert _mask_label(synthetic_small, tmp_path, truth) == 0
    plain = load_label_table(tmp_path / "t.npz")
    assert np.array_equal(with_scheme.label, plain.label) and (plain.label == 1).any()


def test_predictions_geojson_round_trip_to_labels(synthetic_small, tmp_path: Path) -> None:
    """predict -> GeoJSON (QuPath detections) -> label gives the predicted classes back."""
    from _scoregrid import make_scores

    from prostate_fast.geojson import export_geojson

    scores = make_scores(synthetic_small)
    geo = export_geojson(scores, tmp_path / "p.geojson", only_positive=False)
    out = tmp_path / "t.npz"
    argv = ["label", str(synthetic_small.slide), "--geojson", str(geo), "-o", str(out)]
    assert main([*argv, "--all-tiles", "--level", "0", "--rule", "centre"]) == 0
    table = load_label_table(out)
    assert table.classes == scores.classes
    got = {tuple(rc): int(lab) for rc, lab in zip(table.tile_rc, table.label, strict=True)}
    want = {tuple(rc): int(p) for rc, p in zip(scores.tile_rc, scores.predicted, strict=True)}
    assert {rc: got[rc] for rc in want} == want
    assert 0 < sum(want.values()) < len(want)
