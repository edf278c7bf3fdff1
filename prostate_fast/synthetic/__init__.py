"""Deterministic synthetic H&E-like prostate needle-biopsy slides, annotations and truth masks.

No real prostate data ships with the project, so the demo, the tests and the benchmarks use slides
made here. A slide is white glass (slight noise, dust specks, optional green/blue pen marks on the
glass) carrying one to several needle-biopsy cores: long, thin, slightly curved bands stacked
vertically. A core is pink stroma with fibrous texture and benign glands (large star-shaped pale
lumens in a ring of epithelium with purple nuclei); "cancer" regions (polygons inside a core) are
crowded small glands with small lumens and large dark nuclei, visibly darker and more purple.

Modules, in the order they build on each other
----------------------------------------------
``noise``
    Seeded integer hashing of global coordinates, value noise, the stain (Beer-Lambert) table.
``labs``
    :func:`lab_profile`: a lab's look (stain optical densities, glass, blur, JPEG quality,
    scanner colour) from a name or a seed, as a frozen :class:`LabProfile`.
``geometry``
    :func:`synthetic_params`: every feature larger than a few pixels (cores, glands, cancer
    polygons, dust, pen strokes) drawn up front from ``seed`` into a frozen
    :class:`SyntheticParams`, in level-0 pixels (``l0_xy``: x then y), integer polygon vertices.
``render``
    :func:`render_region`: the pixels of any window, a function of the global (x, y) and the seed
    alone, so any window or strip renders the same pixels.
``truth``
    What the geometry says: the painted copy (cancer filled in :data:`CANCER_RGB`), the GeoJSON
    annotations, the truth mask (:data:`CODES`, :func:`truth_mask`) and the metadata.
``writer``
    :func:`make_synthetic`: the slide and its painted copy as pyramidal JPEG TIFFs through the
    package's streaming pyramid writer (bounded memory, rendering ahead of encoding on a thread
    pool), plus the side-car files; every file written under a temporary name and renamed when all
    are complete.
"""

from __future__ import annotations

from .geometry import SyntheticParams, synthetic_params
from .labs import DEFAULT_LAB, LabProfile, lab_profile
from .render import render_region
from .truth import CANCER_RGB, CODES, truth_mask
from .writer import SyntheticSlide, make_synthetic

__all__ = [
    "CANCER_RGB",
    "CODES",
    "DEFAULT_LAB",
    "LabProfile",
    "SyntheticParams",
    "SyntheticSlide",
    "make_synthetic",
    "lab_profile",
    "render_region",
    "synthetic_params",
    "truth_mask",
]
