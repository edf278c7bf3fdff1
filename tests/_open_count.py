"""Count the slides a piece of code opens (``open_slide`` calls), to check "open once"."""

from __future__ import annotations

from pathlib import Path

import pytest


def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the file name of every slide opened with ``open_slide`` is appended here."""
    import prostate_fast.slide as slide_core

    opened: list[str] = []
    real = slide_core.open_slide

    def counting(path, **kw):
        opened.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(slide_core, "open_slide", counting)
    return opened
