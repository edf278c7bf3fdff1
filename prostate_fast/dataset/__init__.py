"""The dataset stage: label tables of many slides in, a RecordIO training set out, and back.

:func:`build_dataset` (:mod:`.build`) runs three steps: **plan** (:mod:`.plan`: load the tables,
split by slide or patient, white cleaning and class balance with the pure-NumPy helpers of
:mod:`.selection`), **pack** (:mod:`.records`: tiles read from the slides, encoded and written by
:class:`~.records.RecordWriter`, the one writer of the record files) and **metadata**
(``dataset.json`` and ``summary.json``, :class:`DatasetSummary` from :mod:`.summary`). The reading
side, :mod:`.reading`, validates ``dataset.json`` (:func:`load_dataset_info`) and reads a split
back (:func:`record_iter`, :func:`read_records`, :func:`count_records`, :func:`load_side_car`).
"""

from __future__ import annotations

from .build import WHITE_THRESHOLD, build_dataset
from .reading import (
    DatasetInfo,
    SplitInfo,
    count_records,
    load_dataset_info,
    load_side_car,
    read_records,
    record_iter,
)
from .records import epoch_batches
from .summary import DatasetSummary

__all__ = [
    "WHITE_THRESHOLD",
    "DatasetInfo",
    "DatasetSummary",
    "SplitInfo",
    "build_dataset",
    "count_records",
    "epoch_batches",
    "load_dataset_info",
    "load_side_car",
    "read_records",
    "record_iter",
]
