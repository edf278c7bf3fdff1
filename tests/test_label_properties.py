"""Property tests (hypothesis) of the label stage: the annotation parsers raise only
AnnotationError on any input, and the painted-copy kernel, polygon coverage and label masks agree
with a NumPy reference for any batch, shape and thread count.

Inputs these properties found escaping as other exceptions (huge integers, absurd nesting, unknown
XML encodings, non-numeric marker colours) are kept as explicit regression cases at the end of each
section.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pytest
from _hypothesis import FEW, SOME
from _references import painted_reference
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prostate_fast.errors import AnnotationError
from prostate_fast.label.annotation import (
    Annotation,
    load_annotation,
    load_aperio_xml,
    load_asap_xml,
    load_geojson,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


def _write(workdir: Path, name: str, data: str | bytes) -> Path:
    path = workdir / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _check_annotation(ann: Annotation, path: Path) -> None:
    """What any successful read promises: finite (n >= 3, 2) float64 rings, at least one positive."""
    assert isinstance(ann, Annotation) and ann.path == path
    assert any(not q.negative for q in ann.polygons)
    for q in ann.polygons:
        for ring in (q.exterior, *q.holes):
            assert ring.dtype == np.float64 and ring.ndim == 2 and ring.shape[1] == 2
            assert len(ring) >= 3 and np.isfinite(ring).all()


def _only_annotation_error(loader, path: Path) -> None:  # noqa: ANN001
    try:
        ann = loader(path)
    except AnnotationError as exc:
        assert str(path) in str(exc)  # the message names the file
    else:
        _check_annotation(ann, path)


# -- GeoJSON -----------------------------------------------------------------------------------
# numbers within float range (integers beyond it: see the regression cases below)
numbers = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 1e9, 1e9 + 1, 0.5]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=20,
)
points = st.lists(numbers, min_size=0, max_size=3)
rings = st.lists(st.one_of(points, json_values), max_size=6)
polygon_coords = st.lists(st.one_of(rings, json_values), max_size=3)
geometry_types = st.sampled_from(
    ["Polygon", "MultiPolygon", "GeometryCollection", "Point", "LineString", "Bogus", 7]
)


@st.composite
def geometries(draw: st.DrawFn, depth: int = 0) -> dict:
    kind = draw(geometry_types)
    geom: dict = {"type": kind}
    if kind == "GeometryCollection" and depth < 2:
        geom["geometries"] = draw(st.lists(geometries(depth + 1), max_size=3) | json_values)
    elif kind == "MultiPolygon":
        geom["coordinates"] = draw(st.lists(polygon_coords, max_size=3) | json_values)
    else:
        geom["coordinates"] = draw(polygon_coords | json_values)
    return geom


classifications = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.fixed_dictionaries(
        {}, optional={"name": st.one_of(st.none(), st.text(max_size=6), numbers)}
    ),
    json_values,
)
properties = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "classification": classifications,
            "objectType": st.sampled_from(["annotation", "detection", "cell", "tile", "x"]),
        },
    ),
    json_values,
)
features = st.fixed_dictionaries(
    {"type": st.just("Feature")},
    optional={
        "geometry": st.one_of(geometries(), st.none(), json_values),
        "properties": properties,
    },
)
geojson_docs = st.one_of(
    features,
    geometries(),
    st.fixed_dictionaries(
        {"type": st.just("FeatureCollection")},
        optional={"features": st.lists(st.one_of(features, geometries(), json_values), max_size=4)},
    ),
    st.lists(st.one_of(features, json_values), max_size=4),
    json_values,
)


@SOME
@given(doc=geojson_docs)
def test_geojson_structures_raise_only_annotation_error(workdir: Path, doc: object) -> None:
    path = _write(workdir, "doc.geojson", json.dumps(doc))
    _only_annotation_error(load_geojson, path)
    _only_annotation_error(load_annotation, path)


@FEW
@given(
    head=st.sampled_from([b"", b"{", b"[", b"<", b"\xef\xbb\xbf", b"\xff\xfe", b" \n{"]),
    body=st.binary(max_size=200),
)
def test_geojson_arbitrary_bytes_raise_only_annotation_error(
    workdir: Path, head: bytes, body: bytes
) -> None:
    path = _write(workdir, "bytes.json", head + body)
    _only_annotation_error(load_geojson, path)
    _only_annotation_error(load_annotation, path)


@FEW
@given(doc=geojson_docs, cut=st.integers(0, 400))
def test_truncated_geojson_raises_only_annotation_error(
    workdir: Path, doc: object, cut: int
) -> None:
    path = _write(workdir, "cut.geojson", json.dumps(doc)[:cut])
    _only_annotation_error(load_geojson, path)


def test_valid_geojson_polygon_is_read(workdir: Path) -> None:
    """The generators above do reach the success path (sanity check of the property)."""
    doc = {
        "type": "Feature",
        "properties": {"classification": {"name": "Tumor"}},
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
    }
    ann = load_geojson(_write(workdir, "ok.geojson", json.dumps(doc)))
    assert ann.names == ("Tumor",) and ann.polygons[0].exterior.shape == (3, 2)


_BIG_INT = "1" + "0" * 400  # a valid JSON integer, 1e400: beyond float64
GEOJSON_ODD = {
    "integer coordinate beyond float64 (OverflowError)":
        '{"type": "Polygon", "coordinates": [[[' + _BIG_INT + ", 0], [0, 1], [1, 1]]]}",
    "integer of more than 4300 digits (ValueError from int())":
        '{"type": "Polygon", "coordinates": [[[' + "1" * 5000 + ", 0], [0, 1], [1, 1]]]}",
    "arrays nested 100000 deep (RecursionError in json.loads)":
        '{"type": "Polygon", "coordinates": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "GeometryCollection nested 600 deep (RecursionError in json.loads)":
        '{"type": "GeometryCollection", "geometries": [' * 600 + "]}" * 600,
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(GEOJSON_ODD))
@pytest.mark.parametrize("loader", [load_geojson, load_annotation], ids=["geojson", "any"])
def test_geojson_odd_input_gives_annotation_error(workdir: Path, case: str, loader) -> None:  # noqa: ANN001
    path = _write(workdir, "bug.geojson", GEOJSON_ODD[case])
    with pytest.raises(AnnotationError):
        loader(path)


# -- ASAP and Aperio XML -------------------------------------------------------------------------
_TAGS = (
    "ASAP_Annotations Annotations Annotation Coordinates Coordinate Regions Region Vertices "
    "Vertex Attributes Attribute Groups x"
).split()
_ATTRS = "X Y Order Type PartOfGroup Name NegativeROA MicronsPerPixel Value Text Id Z".split()
attr_values = st.one_of(
    numbers.map(str),
    st.text(max_size=6),
    st.sampled_from(
        ["nan", "inf", "-inf", "1e400", "0x10", "", " 3 ", "1_0", "1", "2", "0"]
        + "Polygon Spline Rectangle Dot _2 Exclusion None".split()
    ),
)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> str:
    tag = draw(st.sampled_from(_TAGS))
    attrs = draw(st.dictionaries(st.sampled_from(_ATTRS), attr_values, max_size=4))
    text = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
    kids = draw(st.lists(elements(depth + 1), max_size=0 if depth >= 4 else 4))
    body = "".join(kids) + escape(draw(st.text(max_size=4)))
    return f"<{tag}{text}>{body}</{tag}>"


@st.composite
def asap_docs(draw: st.DrawFn) -> str:
    anns = []
    for _ in range(draw(st.integers(0, 3))):
        coords = "".join(
            f"<Coordinate Order={quoteattr(draw(attr_values))} X={quoteattr(draw(attr_values))} "
            f"Y={quoteattr(draw(attr_values))}/>"
            for _ in range(draw(st.integers(0, 5)))
        )
        kind, group = draw(attr_values), draw(attr_values)
        anns.append(
            f"<Annotation Type={quoteattr(kind)} PartOfGroup={quoteattr(group)}>"
            f"<Coordinates>{coords}</Coordinates></Annotation>"
        )
    return f"<ASAP_Annotations><Annotations>{''.join(anns)}</Annotations></ASAP_Annotations>"


@st.composite
def aperio_docs(draw: st.DrawFn) -> str:
    anns = []
    for _ in range(draw(st.integers(0, 3))):
        regions = []
        for _ in range(draw(st.integers(0, 3))):
            verts = "".join(
                f"<Vertex X={quoteattr(draw(attr_values))} Y={quoteattr(draw(attr_values))}/>"
                for _ in range(draw(st.integers(0, 5)))
            )
            rtype, neg = draw(attr_values), draw(st.sampled_from(["0", "1", "x"]))
            regions.append(
                f"<Region Type={quoteattr(rtype)} NegativeROA={quoteattr(neg)}>"
                f"<Vertices>{verts}</Vertices></Region>"
            )
        name = draw(attr_values)
        anns.append(
            f"<Annotation Name={quoteattr(name)}><Attributes><Attribute "
            f"Value={quoteattr(draw(attr_values))}/></Attributes>"
            f"<Regions>{''.join(regions)}</Regions></Annotation>"
        )
    mpp = draw(st.one_of(st.just(""), attr_values))
    return f"<Annotations MicronsPerPixel={quoteattr(mpp)}>{''.join(anns)}</Annotations>"


prologues = st.sampled_from(
    [
        "",
        '<?xml version="1.0"?>',
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0" encoding="UTF-16"?>',
        '<!DOCTYPE a [<!ENTITY e "x">]>',
        '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE a [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
    ]
)
xml_docs = st.one_of(asap_docs(), aperio_docs(), elements())


@SOME
@given(prologue=prologues, doc=xml_docs, cut=st.none() | st.integers(0, 300), entity=st.booleans())
def test_xml_raises_only_annotation_error(
    workdir: Path, prologue: str, doc: str, cut: int | None, entity: bool
) -> None:
    text = prologue + doc
    if entity:  # an entity reference inside the root element
        text = text.replace("</", "&e;</", 1)
    if cut is not None:
        text = text[:cut]
    path = _write(workdir, "doc.xml", text)
    for loader in (load_asap_xml, load_aperio_xml, load_annotation):
        _only_annotation_error(loader, path)


@FEW
@given(
    head=st.sampled_from([b"<", b"<?xml", b"<ASAP_Annotations>", b"<Annotations>", b"\xff\xfe<"]),
    body=st.binary(max_size=200),
)
def test_xml_arbitrary_bytes_raise_only_annotation_error(
    workdir: Path, head: bytes, body: bytes
) -> None:
    path = _write(workdir, "bytes.xml", head + body)
    for loader in (load_asap_xml, load_aperio_xml, load_annotation):
        _only_annotation_error(loader, path)


XML_ODD = {
    "unknown encoding in the declaration (LookupError)":
        '<?xml version="1.0" encoding="bogus"?><ASAP_Annotations/>',
    "multi-byte encoding in the declaration (ValueError)":
        '<?xml version="1.0" encoding="utf-32"?><Annotations/>',
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(XML_ODD))
@pytest.mark.parametrize(
    "loader", [load_asap_xml, load_aperio_xml, load_annotation], ids=["asap", "aperio", "any"]
)
def test_xml_odd_input_gives_annotation_error(workdir: Path, case: str, loader) -> None:  # noqa: ANN001
    path = _write(workdir, "bug.xml", XML_ODD[case])
    with pytest.raises(AnnotationError):
        loader(path)


def test_valid_xml_polygons_are_read(workdir: Path) -> None:
    """The generators above do reach the success path (sanity check of the property)."""
    asap = (
        '<ASAP_Annotations><Annotations><Annotation Type="Polygon" PartOfGroup="Tumor">'
        '<Coordinates><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="9" Y="0"/>'
        '<Coordinate Order="2" X="9" Y="9"/></Coordinates></Annotation></Annotations>'
        "</ASAP_Annotations>"
    )
    aperio = (
        '<Annotations MicronsPerPixel="0.5"><Annotation Name="Tumor"><Regions>'
        '<Region Type="1"><Vertices><Vertex X="0" Y="0"/><Vertex X="9" Y="9"/></Vertices>'
        "</Region></Regions></Annotation></Annotations>"
    )
    assert load_annotation(_write(workdir, "a.xml", asap)).names == ("Tumor",)
    ann = load_annotation(_write(workdir, "b.xml", aperio))
    assert ann.mpp == 0.5 and ann.polygons[0].exterior.shape == (4, 2)


# -- the painted-copy kernel ---------------------------------------------------------------------
# pixel values and tile shapes as in test_properties.py (values straddling 200 and 218 often)
pixel = st.one_of(st.integers(0, 255), st.integers(190, 255), st.sampled_from([199, 200, 218, 255]))
tile_shapes = st.tuples(st.integers(0, 5), st.integers(1, 9), st.integers(1, 9), st.just(3))


@st.composite
def painted_batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = draw(tile_shapes)
    original = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 255)))
    colours = draw(hnp.arrays(np.uint8, (draw(st.integers(0, 16)), 3), elements=pixel))
    painted = original.copy()
    if original.size:  # paint marker colours (and some off-colours) over random pixels
        where = draw(hnp.arrays(np.bool_, shape[:3]))
        palette = colours if len(colours) else np.array([[0, 255, 0]], np.uint8)
        pick = draw(hnp.arrays(np.uint8, shape[:3], elements=st.integers(0, len(palette) - 1)))
        noise = draw(hnp.arrays(np.int16, shape, elements=st.integers(-40, 40)))
        paint = np.clip(palette[pick].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        painted[where] = paint[where]
    return original, painted, colours


@SOME
@given(
    batch=painted_batches(),
    thr=st.one_of(st.just(60), st.integers(0, 255)),
    tol=st.one_of(st.just(64), st.just(255), st.integers(0, 255)),
)
def test_painted_tile_stats_matches_numpy_for_any_threads(batch: tuple, thr: int, tol: int) -> None:
    from prostate_fast.label import painted_tile_stats

    original, painted, colours = batch
    ref_counts, ref_sums = painted_reference(original, painted, colours, thr, tol)
    pixels = original.shape[1] * original.shape[2]
    for threads in (1, 2, 3):
        counts, sums = painted_tile_stats(
            original, painted, colours, threshold=thr, colour_tol=tol, n_threads=threads
        )
        assert counts.dtype == np.int64 and sums.dtype == np.int64
        np.testing.assert_array_equal(counts, ref_counts)
        np.testing.assert_array_equal(sums, ref_sums)
        assert ((counts >= 0) & (counts <= pixels)).all()  # marked share in [0, 1]
        assert (sums <= 255 * counts[:, None]).all() and (sums >= 0).all()


@FEW
@given(
    o_shape=st.lists(st.integers(0, 3), max_size=5),
    same=st.booleans(),
    k=st.integers(0, 18),
    colour_value=st.integers(-2, 257),
    thr=st.integers(-2, 257),
    dtype=st.sampled_from([np.uint8, np.uint16]),
)
def test_painted_tile_stats_refuses_bad_input_with_value_error(
    o_shape: list, same: bool, k: int, colour_value: int, thr: int, dtype
) -> None:  # noqa: ANN001
    from prostate_fast.label import painted_tile_stats

    o = np.zeros(o_shape, dtype)
    p = np.zeros(o_shape if same else [*o_shape, 1], dtype)
    cols = np.full((k, 3), colour_value, np.int64)
    try:
        counts, sums = painted_tile_stats(o, p, cols, threshold=thr)
    except ValueError:
        return
    assert counts.shape == (o_shape[0],) and sums.shape == (o_shape[0], 3)
    assert (counts == 0).all()  # identical images: nothing painted


PAINTED_COLOUR_ODD = {
    "text colours (numpy UFuncTypeError)": [["1", "2", "3"]],
    "None in the colours (TypeError)": [[None, 0, 0]],
}


@pytest.mark.parametrize("case", sorted(PAINTED_COLOUR_ODD))
def test_painted_tile_stats_non_numeric_colours_give_value_error(case: str) -> None:
    from prostate_fast.label import painted_tile_stats

    tiles = np.zeros((1, 2, 2, 3), np.uint8)
    with pytest.raises(ValueError):
        painted_tile_stats(tiles, tiles, PAINTED_COLOUR_ODD[case])


# -- polygon coverage ----------------------------------------------------------------------------
def _crossings(poly, y: float) -> np.ndarray:  # noqa: ANN001
    """x of every crossing of the line ``y`` by the polygon's rings (min <= y < max rule)."""
    xs = []
    for ring in (poly.exterior, *poly.holes):
        for (xa, ya), (xb, yb) in zip(ring, np.roll(ring, -1, axis=0), strict=True):
            if min(ya, yb) <= y < max(ya, yb):
                xs.append(xa + (y - ya) * (xb - xa) / (yb - ya))
    return np.array(xs)


def _coverage_reference(pos, neg, xy, t, samples):  # noqa: ANN001, ANN202
    """Covered share of each tile on the same sample lines, by classifying interval midpoints."""
    out = np.zeros((len(xy), len(pos)))
    for i, (x0, y0) in enumerate(xy):
        for c in range(len(pos)):
            total = 0.0
            for s in range(samples):
                y = y0 + (s + 0.5) * (t / samples)
                cp = [_crossings(q, y) for q in pos[c]]
                cn = [_crossings(q, y) for q in neg[c]]
                cuts = np.concatenate([x0, x0 + t, *cp, *cn], axis=None)
                cuts = np.unique(cuts[(cuts >= x0) & (cuts <= x0 + t)])
                for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                    m = (a + b) / 2
                    inside = any((xs < m).sum() % 2 for xs in cp)
                    removed = any((xs < m).sum() % 2 for xs in cn)
                    total += (b - a) if inside and not removed else 0.0
            out[i, c] = total / (t * samples)
    return out


vertex = st.one_of(st.integers(-5, 30), st.floats(-5, 30, allow_nan=False)).map(float)


@st.composite
def polygons_(draw: st.DrawFn) -> object:
    """A polygon (any shape, self-intersections allowed) with holes inside its bounding box."""
    from prostate_fast.label.annotation import Polygon

    ext = np.array(draw(st.lists(st.tuples(vertex, vertex), min_size=3, max_size=7)))
    lo, hi = ext.min(axis=0), ext.max(axis=0)
    unit = st.floats(0, 1, allow_nan=False)
    holes = draw(st.lists(st.lists(st.tuples(unit, unit), min_size=3, max_size=5), max_size=1))
    return Polygon(None, ext, tuple(lo + np.array(h) * (hi - lo) for h in holes))


@FEW
@given(
    pos=st.lists(st.lists(polygons_(), max_size=2), min_size=1, max_size=2),
    neg=st.lists(polygons_(), max_size=2),
    xy=st.lists(st.tuples(st.integers(-4, 24), st.integers(-4, 24)), min_size=1, max_size=4),
    t=st.integers(1, 10),
    samples=st.integers(1, 6),
)
def test_polygon_coverage_matches_a_reference(pos, neg, xy, t, samples) -> None:  # noqa: ANN001
    from prostate_fast.label.annotation import polygon_coverage

    negs = [neg[: c + 1] for c in range(len(pos))]  # a different negative set per class
    xy = np.array(xy, np.int64)
    cover, inside = polygon_coverage(pos, negs, xy, t, samples=samples)
    assert cover.shape == inside.shape == (len(xy), len(pos))
    assert ((cover >= 0) & (cover <= 1)).all()
    ref = np.clip(_coverage_reference(pos, negs, xy, t, samples), 0, 1)
    np.testing.assert_allclose(cover, ref, atol=1e-9)


# -- label masks ---------------------------------------------------------------------------------
CODES = {0: None, 1: 0, 2: 1}  # ClassMap.create()'s default: 1 benign, 2 cancer, 0 nothing


@st.composite
def masks(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    """A label mask (codes 0-2) at downsample 1 or 2 of a slide, and the grid's tile size."""
    d = draw(st.sampled_from([1, 2]))
    mh, mw = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.int64]))
    mask = draw(hnp.arrays(dtype, (mh, mw), elements=st.sampled_from(sorted(CODES))))
    tile = d * draw(st.integers(1, 8))  # whole mask pixels per tile
    return mask, d, tile


@SOME
@given(case=masks(), rule=st.sampled_from(["coverage", "centre"]))
def test_mask_coverage_matches_numpy(case: tuple, rule: str) -> None:
    from prostate_fast.label import label_tiles
    from prostate_fast.slide import ArraySlide
    from prostate_fast.tile import full_grid

    mask, d, tile = case
    slide = ArraySlide(np.full((mask.shape[0] * d, mask.shape[1] * d, 3), 200, np.uint8))
    grid = full_grid(slide, slide.choose_level(level=0), tile)
    table = label_tiles(slide, mask, grid, source="mask", white=False, rule=rule)
    assert table.coverage.shape == (len(grid), 2)
    assert ((table.coverage >= 0) & (table.coverage <= 1)).all()
    t = tile // d
    for i, (x, y) in enumerate(np.asarray(grid.l0_xy)):
        box = mask[y // d : y // d + t, x // d : x // d + t]
        for code, cls in ((1, 0), (2, 1)):
            assert table.coverage[i, cls] == pytest.approx((box == code).mean(), abs=1e-6)
    assert set(np.unique(table.label)) <= {0, 1}


@st.composite
def random_arrays(draw: st.DrawFn) -> np.ndarray:
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12))
    assume(math.prod(shape) < 2000)
    values = draw(hnp.arrays(np.int64, shape, elements=st.sampled_from([0, 1, 2, 3, -1, 300])))
    dtype = draw(st.sampled_from([np.uint8, np.int8, np.uint16, np.int64, np.float32, np.bool_]))
    return values.astype(dtype)


@FEW
@given(arr=random_arrays())
def test_random_arrays_as_masks_raise_only_annotation_error(arr: np.ndarray) -> None:
    from prostate_fast.label import label_tiles
    from prostate_fast.slide import ArraySlide
    from prostate_fast.tile import full_grid

    slide = ArraySlide(np.full((24, 24, 3), 200, np.uint8))
    grid = full_grid(slide, slide.choose_level(level=0), 4)
    try:
        table = label_tiles(slide, arr, grid, source="mask", white=False)
    except AnnotationError as exc:
        assert "<array>" in str(exc)
        return
    assert arr.dtype.kind in "ui" and set(np.unique(arr)) <= set(CODES)
    assert ((table.coverage >= 0) & (table.coverage <= 1)).all()
