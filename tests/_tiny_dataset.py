"""A tiny dataset folder following prostate_fast.dataset's contract, from synthetic textures.

Used by test_train and test_evaluate: two clearly different textures (pale pink with large pale
blobs for "benign", darker purple with many small dark dots for "cancer"), 32 px tiles packed as
PNG records written by the dataset module's own :class:`RecordWriter` and encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from prostate_fast.dataset.reading import FORMAT, VERSION
from prostate_fast.dataset.records import RecordWriter, make_encoder

CLASSES = ["benign", "cancer"]


def texture(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One RGB uint8 tile of class ``label``."""
    base = np.array([225, 170, 200] if label == 0 else [170, 110, 175], float)
    img = np.empty((size, size, 3))
    img[:] = base + rng.normal(0, 12, 3)
    img += rng.normal(0, 10, (size, size, 1))
    if label == 0:
        for _ in range(2):
            c = tuple(int(v) for v in rng.integers(4, size - 4, 2))
            cv2.circle(img, c, int(rng.integers(4, 8)), (245, 235, 240), -1)
    else:
        for _ in range(size // 2):
            c = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.circle(img, c, int(rng.integers(1, 3)), (80, 40, 120), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_split(
    root: Path,
    split: str,
    slides: list[str],
    per_slide: int,
    size: int,
    seed: int,
    n_classes: int = 2,
) -> dict:
    rng = np.random.default_rng(seed)
    encode = make_encoder("png", 95, 1)
    counts = [0] * n_classes
    with RecordWriter(root / split) as writer:
        for slide in slides:
            for i in range(per_slide):
                label = i % 2
                tile = encode(texture(rng, label, size))
                writer.add(tile, label, slide, slide, (i * size, 0), 0, 1.0, 0.0)
                counts[label] += 1
        rid = writer.count
    return {"records": rid, "per_class": counts, "slides": slides}


def make_tiny_dataset(
    root: Path,
    *,
    size: int = 32,
    train_slides: int = 4,
    per_slide: int = 40,
    val_per_slide: int = 40,
    seed: int = 0,
    classes: list[str] | None = None,
) -> Path:
    """Write the dataset folder ``root`` (4 train slides, 1 val slide, 50-50 by default)."""
    root.mkdir(parents=True, exist_ok=True)
    k = len(classes or CLASSES)
    train_names = [f"t{i}" for i in range(train_slides)]
    splits = {
        "train": write_split(root, "train", train_names, per_slide, size, seed, k),
        "val": write_split(root, "val", ["v0"], val_per_slide, size, seed + 1, k),
    }
    info = {
        "format": FORMAT,
        "version": VERSION,
        "classes": classes or CLASSES,
        "colours": {"cancer": [0, 255, 0]},
        "tile_size": size,
        "downsample": 1.0,
        "mpp": 0.5,
        "magnification": 20.0,
        "encoding": "png",
        "jpeg_quality": None,
        "channel_order": "RGB",
        "normalisation": {"scale": 1 / 255},
        "splits": splits,
        "class_weights": [1.0] * k,
        "settings": {"synthetic": "tests/_tiny_dataset.py"},
    }
    (root / "dataset.json").write_text(json.dumps(info, indent=2))
    (root / "summary.json").write_text(json.dumps({"splits": splits}))
    return root
