"""Polygon annotations: QuPath GeoJSON, ASAP and Aperio XML, exact coverage, every error path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prostate_fast.errors import AnnotationError
from prostate_fast.label import ClassMap, label_tiles
from prostate_fast.label.annotation import (
    Polygon,
    load_annotation,
    load_aperio_xml,
    load_asap_xml,
    load_geojson,
    polygon_coverage,
)
from prostate_fast.slide import LevelChoice, Slide
from prostate_fast.tile import TileGrid

HOLE = "qupath_polygon_with_hole.geojson"
TUMOR = "qupath_tumor_invborder.geojson"


class BlankSlide(Slide):
    """A white slide of any size that costs no memory (polygons only need the geometry)."""

    format = "blank"

    def __init__(self, width: int, height: int, mpp: float | None = 0.5) -> None:
        super().__init__(Path("blank.svs"))
        self._level_dimensions = [(width, height)]
        self._mpp = (mpp, mpp) if mpp else None

    def _read(self, l0_xy, level, size):
        return np.full((size[1], size[0], 3), 255, np.uint8)


def grid_at(l0_xy, tile: int = 128, downsample: float = 1.0) -> TileGrid:
    xy = np.asarray(l0_xy, np.int64).reshape(-1, 2)
    n = len(xy)
    rc = np.stack([np.arange(n), np.zeros(n, int)], axis=1).astype(np.int32)
    choice = LevelChoice(0, downsample, downsample, None, None)
    tissue, region = np.ones(n, np.float32), np.full(n, -1, np.int32)
    return TileGrid("blank.svs", choice, tile, tile, (n, 1), rc, xy, tissue, region)


def square(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


# -- real QuPath exports ------------------------------------------------------------------------
def test_real_qupath_multipolygon_export_parses(data_dir: Path) -> None:
    ann = load_annotation(data_dir / "annotations" / TUMOR)
    assert ann.format == "geojson"
    assert set(ann.names) == {"Tumor", "Invborder"}
    assert len(ann.polygons) == 8
    assert sum(len(p.holes) for p in ann.polygons) == 1
    assert all(p.exterior.shape[1] == 2 and len(p.exterior) >= 3 for p in ann.polygons)


def test_real_qupath_export_labels_with_alias_and_rejects_unknown_name(data_dir: Path) -> None:
    path = data_dir / "annotations" / TUMOR
    slide = BlankSlide(90_000, 180_000)
    xs, ys = np.meshgrid(np.arange(0, 90_000, 4096), np.arange(0, 180_000, 4096))
    grid = grid_at(np.stack([xs.ravel(), ys.ravel()], 1), tile=128, downsample=32.0)
    with pytest.raises(AnnotationError, match=rf"{TUMOR}.*'Invborder'"):
        label_tiles(slide, path, grid, white=False)
    table = label_tiles(
        slide, path, grid, classes=ClassMap.create(aliases={"invborder": "ignore"}), white=False
    )
    counts = table.counts()
    assert counts["cancer"] > 50 and counts["benign"] > 500
    assert table.source == "geojson" and np.isnan(table.white_fraction).all()


def test_tile_inside_the_hole_is_not_labelled(data_dir: Path) -> None:
    path = data_dir / "annotations" / HOLE
    ann = load_geojson(path)
    (poly,) = ann.polygons
    assert poly.name is None and len(poly.holes) == 1
    hole = poly.holes[0]
    cx, cy = hole.mean(axis=0)  # the hole is a round blob: its mean point is deep inside
    inside_hole = (int(cx) - 64, int(cy) - 64)
    x0, y0 = poly.exterior.min(axis=0)
    on_ring = (int(x0) + 20, int(y0) + 20)  # inside the exterior, far from the hole
    grid = grid_at([inside_hole, on_ring])
    # An unclassified polygon counts as the only positive class (cancer) by default.
    for rule in ("coverage", "centre"):
        table = label_tiles(BlankSlide(14_000, 20_000), path, grid, rule=rule, white=False)
        assert table.classes[table.label[0]] == "benign"
        assert table.classes[table.label[1]] == "cancer"
        assert table.coverage[0, 1] == 0.0 and table.coverage[1, 1] == 1.0


# -- coverage geometry --------------------------------------------------------------------------
def test_coverage_is_exact_across_the_tile_and_bounded_vertically() -> None:
    sq = Polygon("a", square(10.3, 20.7, 100.9, 90.2))
    xy = np.array([[0, 0], [64, 0], [0, 64], [64, 64], [200, 200]])
    cov, _ = polygon_coverage([[sq]], [[]], xy, 64, samples=64)
    for (x, y), c in zip(xy, cov[:, 0], strict=True):
        w = max(0.0, min(x + 64, 100.9) - max(x, 10.3))
        h = max(0.0, min(y + 64, 90.2) - max(y, 20.7))
        assert abs(c - w * h / 64**2) <= 1 / (2 * 64) + 1e-12


def test_union_holes_and_negative_regions() -> None:
    a = Polygon("a", square(0, 0, 100, 100), (square(0, 0, 50, 100),))  # right half only
    b = Polygon("a", square(25, 0, 75, 100))  # overlaps a: counted once
    neg = Polygon(None, square(90, 0, 100, 100), negative=True)
    cov, inside = polygon_coverage([[a, b]], [[neg]], np.array([[0, 0]]), 100, centres=True)
    assert cov[0, 0] == pytest.approx(0.65)  # [25, 90) of [0, 100)
    assert inside[0, 0]


def test_coverage_matches_a_fine_raster_on_random_blobs() -> None:
    import cv2

    rng = np.random.default_rng(3)
    polys = []
    for cx, cy, r in ((300, 300, 150), (420, 380, 120), (800, 500, 100)):
        t = np.sort(rng.uniform(0, 2 * np.pi, 30))
        rr = r * (1 + 0.3 * rng.uniform(-1, 1, 30))
        polys.append(Polygon("a", np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1)))
    xs, ys = np.meshgrid(np.arange(0, 1024, 64), np.arange(0, 768, 64))
    xy = np.stack([xs.ravel(), ys.ravel()], 1)
    cov, _ = polygon_coverage([polys], [[]], xy, 64)
    s = 8  # reference: centre-sampled raster at 1/8 px
    fine = np.zeros((768 * s, 1024 * s), np.uint8)
    for p in polys:
        pts = np.rint((p.exterior * s - 0.5) * 256).astype(np.int32)
        cv2.fillPoly(fine, [pts], 1, cv2.LINE_8, 8)
    ref = fine.reshape(12, 64 * s, 16, 64 * s).mean(axis=(1, 3)).ravel()
    assert np.abs(cov[:, 0] - ref).max() < 0.01


# -- ASAP and Aperio XML ------------------------------------------------------------------------
ASAP = """<?xml version="1.0"?>
<ASAP_Annotations><Annotations>
 <Annotation Name="t1" Type="Polygon" PartOfGroup="_0"><Coordinates>
  <Coordinate Order="2" X="100" Y="100"/><Coordinate Order="0" X="0" Y="0"/>
  <Coordinate Order="1" X="100" Y="0"/><Coordinate Order="3" X="0" Y="100"/>
 </Coordinates></Annotation>
 <Annotation Name="ex" Type="Polygon" PartOfGroup="_2"><Coordinates>
  <Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="50" Y="0"/>
  <Coordinate Order="2" X="50" Y="100"/><Coordinate Order="3" X="0" Y="100"/>
 </Coordinates></Annotation>
 <Annotation Name="dot" Type="Dot" PartOfGroup="_0"><Coordinates>
  <Coordinate Order="0" X="5" Y="5"/></Coordinates></Annotation>
</Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None"/></AnnotationGroups>
</ASAP_Annotations>
"""

APERIO = """<?xml version="1.0" encoding="UTF-8"?>
<Annotations MicronsPerPixel="1.000000">
 <Annotation Id="1" Name="Tumor" LineColor="65280"><Regions>
  <Region Id="1" Type="0" NegativeROA="0"><Vertices>
   <Vertex X="0" Y="0"/><Vertex X="50" Y="0"/><Vertex X="50" Y="50"/><Vertex X="0" Y="50"/>
  </Vertices></Region>
  <Region Id="2" Type="1" NegativeROA="1"><Vertices>
   <Vertex X="0" Y="0"/><Vertex X="25" Y="50"/></Vertices></Region>
  <Region Id="3" Type="4" NegativeROA="0"><Vertices>
   <Vertex X="0" Y="0"/><Vertex X="9" Y="9"/></Vertices></Region>
 </Regions></Annotation>
</Annotations>
"""


def test_asap_groups_order_and_camelyon_exclusion(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(ASAP)
    ann = load_annotation(path)
    assert ann.format == "asap" and len(ann.polygons) == 2
    assert ann.polygons[1].negative and ann.polygons[1].name is None
    table = label_tiles(BlankSlide(1000, 1000), path, grid_at([[0, 0]], tile=100), white=False)
    assert table.coverage[0, 1] == pytest.approx(0.5)  # "_0" -> cancer, "_2" removed
    assert table.classes[table.label[0]] == "cancer"


def test_aperio_negative_region_and_microns_per_pixel_rescale(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(APERIO)
    ann = load_aperio_xml(path)
    assert ann.format == "aperio" and ann.mpp == 1.0 and len(ann.polygons) == 2
    # drawn at 1 µm/px on a 0.5 µm/px slide: every coordinate doubles
    table = label_tiles(
        BlankSlide(1000, 1000, mpp=0.5), path, grid_at([[0, 0]], tile=100), white=False
    )
    assert table.coverage[0, 1] == pytest.approx(0.5)  # [50, 100) x [0, 100)


# -- error paths: each gives AnnotationError naming the file ------------------------------------
BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ASAP_Annotations><Annotations><Annotation Name="&lol3;" Type="Polygon" PartOfGroup="_0">
<Coordinates><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="9" Y="0"/>
<Coordinate Order="2" X="9" Y="9"/></Coordinates></Annotation></Annotations></ASAP_Annotations>
"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><Annotations>&x;</Annotations>
"""

BAD = {
    "empty.geojson": "",
    "blank.geojson": " \n\t\n",
    "truncated.geojson": '{"type": "FeatureCollection", "features": [',
    "nofeatures.geojson": '{"type": "FeatureCollection", "features": []}',
    "points.geojson": json.dumps(
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}
    ),
    "badcoords.geojson": json.dumps(
        {"type": "Polygon", "coordinates": [[["a", 0], [1, 0], [1, 1]]]}
    ),
    "nan.geojson": '{"type": "Polygon", "coordinates": [[[NaN, 0], [1, 0], [1, 1]]]}',
    "notgeo.geojson": '{"hello": 1}',
    "bomb.xml": BOMB,
    "xxe.xml": XXE,
    "malformed.xml": "<ASAP_Annotations><Annotations>",
    "unknown.xml": "<Foo/>",
    "badvertex.xml": '<Annotations><Annotation><Regions><Region><Vertices><Vertex X="a" Y="1"/>'
    "</Vertices></Region></Regions></Annotation></Annotations>",
    "noregion.xml": "<Annotations><Annotation/></Annotations>",
    "binary.geojson": b"\xff\xfe\x00\xd8\x00".decode("latin-1"),
    "text.txt": "hello",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_annotation_files_raise_annotation_error_naming_the_file(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.write_text(BAD[name], encoding="latin-1" if name == "binary.geojson" else "utf-8")
    with pytest.raises(AnnotationError, match=name.replace(".", r"\.")):
        load_annotation(path)


def test_entity_bomb_is_refused_by_each_xml_reader(tmp_path: Path) -> None:
    path = tmp_path / "bomb.xml"
    path.write_text(BOMB)
    for reader in (load_asap_xml, load_aperio_xml):
        with pytest.raises(AnnotationError, match="bomb.xml.*unsafe"):
            reader(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="nope.geojson"):
        load_annotation(tmp_path / "nope.geojson")
    with pytest.raises(AnnotationError, match="directory"):
        load_geojson(tmp_path)


def test_unknown_class_name_names_file_and_class(tmp_path: Path) -> None:
    path = tmp_path / "stroma.geojson"
    geometry = {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 0]]]}
    props = {"classification": {"name": "Stroma"}}
    feat = {"type": "Feature", "geometry": geometry, "properties": props}
    path.write_text(json.dumps([feat]))
    with pytest.raises(AnnotationError, match=r"stroma\.geojson.*'Stroma'"):
        label_tiles(BlankSlide(500, 500), path, grid_at([[0, 0]]), white=False)
    cmap = ClassMap.create(aliases={"Stroma": "ignore"})
    table = label_tiles(BlankSlide(500, 500), path, grid_at([[0, 0]]), classes=cmap, white=False)
    assert table.label[0] == 0 and table.coverage[0].sum() == 0


def test_unclassified_needs_a_mapping_when_there_are_several_classes(tmp_path: Path) -> None:
    path = tmp_path / "u.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9]]]}))
    cmap = ClassMap.create({"g5": (255, 0, 0), "g4": (0, 255, 0)})
    with pytest.raises(AnnotationError, match="u.geojson.*unclassified"):
        label_tiles(BlankSlide(500, 500), path, grid_at([[0, 0]]), classes=cmap, white=False)


def test_polygons_of_another_slide_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "far.geojson"
    ring = [[9000, 9000], [9100, 9000], [9100, 9100]]
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    with pytest.raises(AnnotationError, match="far.geojson.*no polygon lies on the slide"):
        label_tiles(BlankSlide(500, 500), path, grid_at([[0, 0]]), white=False)


def test_severity_order_decides_between_classes(tmp_path: Path) -> None:
    feats = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [square(*b).tolist()]},
            "properties": {"classification": {"name": n}},
        }
        for n, b in (("g4", (0, 0, 64, 128)), ("g5", (64, 0, 74, 128)))
    ]
    path = tmp_path / "g.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    grid = grid_at([[0, 0]])
    for order, want in ((None, "g5"), (["g4", "g5"], "g4")):
        cmap = ClassMap.create(["g5", "g4"], order=order)
        table = label_tiles(BlankSlide(500, 500), path, grid, classes=cmap, white=False)
        assert table.classes[table.label[0]] == want


def test_class_map_parse_and_validation() -> None:
    cmap = ClassMap.parse("g5=255,0,0;g4=0,0,255", order="g4,g5", aliases="Tumor=g5;Fat=ignore")
    assert cmap.names == ("benign", "g5", "g4") and cmap.order == (2, 1)
    assert cmap.colours == (None, (255, 0, 0), (0, 0, 255))
    assert cmap.resolve("TUMOR", "f") == 1 and cmap.resolve("fat", "f") is None
    for bad in ("a=1,2", "a=1,2,300", "bad name=1,2,3"):
        with pytest.raises(ValueError):
            ClassMap.parse(bad)
    with pytest.raises(ValueError, match="order"):
        ClassMap.parse("a;b", order="a")
