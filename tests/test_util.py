"""Shared helpers: atomic outputs, thread counts, array checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from prostate_fast._util import atomic_path, check_image, resolve_threads


def test_atomic_path_renames_on_success_with_normal_mode(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("done")
        assert not final.exists()
    assert final.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(final.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in final.parent.iterdir()] == ["out.txt"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_refuses_to_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "keep.txt"
    final.write_text("user data")
    with pytest.raises(FileExistsError, match="keep.txt"), atomic_path(final):
        pass
    assert final.read_text() == "user data"
    with pytest.raises(FileExistsError, match="not written by prostate-fast"):  # not ours
        with atomic_path(final, overwrite=True):
            pass
    assert final.read_text() == "user data"
    final.write_text("# prostate-fast test file\n")  # one of ours: replaced
    with atomic_path(final, overwrite=True) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"


def test_resolve_threads() -> None:
    assert resolve_threads(None) >= 1
    assert resolve_threads(3) == 3
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="n_threads"):
            resolve_threads(bad)  # type: ignore[arg-type]


def test_check_image() -> None:
    assert check_image("x", np.zeros((2, 3, 3), np.uint8)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="x must be uint8"):
        check_image("x", np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        check_image("x", np.zeros((2, 3), np.uint8))
