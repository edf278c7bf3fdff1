"""The ``prostate-fast`` command line, one module per pipeline phase.

* :mod:`.main`: the entry point :func:`main` and the single error funnel (one line, exit 2);
* :mod:`.prepare`: ``synth``, ``info``, ``tiles``, ``label``, ``dataset``;
* :mod:`.model`: ``train``, ``launch``, ``evaluate``, ``check``;
* :mod:`.apply`: ``predict``, ``overlay``, ``screen``, ``run``, ``batch``, ``demo``;
* :mod:`.common`: option helpers shared by the phases;
* :mod:`.worker`: the dist_sync worker entry (``python -m prostate_fast.cli.worker``).
"""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
