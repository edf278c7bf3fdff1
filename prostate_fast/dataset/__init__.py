"""TODO docstring."""

from __future__ import annotations

from .build import (
    WHITE_THRESHOLD,
    DatasetInfo,
    DatasetSummary,
    SplitInfo,
    build_dataset,
    count_records,
    epoch_batches,
    load_dataset_info,
    load_side_car,
    read_records,
    record_iter,
)

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
