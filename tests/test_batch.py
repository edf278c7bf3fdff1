"""Batch screening: discovery, resume rules, a killed run resumed, crash isolation, pool == Dask.

The scenario of issue 9: 10 tiny synthetic slides, 2 of them corrupt (a truncated copy, a text
file named .svs). A CLI run (one worker) is killed with SIGKILL once two slides are complete, then
rerun (two workers): it finishes 8, reports 2, redoes none of the finished ones, and every output
opens. A Dask LocalCluster on 127.0.0.1 then gives the same outputs. The model is the untrained
study network of ``_tiny_model`` (ranking quality is not the point here); threshold 0 makes every
tissue tile positive, so the GeoJSON holds every tile's probabilities.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from prostate_fast.batch.core import SUMMARY, WORKLIST, SlideResult, discover_slides, run_batch
from prostate_fast.errors import ProstateFastError
from prostate_fast.screen import ScreeningOptions

GOOD = [f"slide{i:02d}" for i in (0, 1, 2, 4, 5, 6, 8, 9)]
TRUNCATED, TEXT = "slide03.tif", "slide07.svs"
COMMON = ["--engine", "native", "--threads", "1", "--threshold", "cancer=0"]
OUTPUTS = ("overlay", "thumbnail", "geojson")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mxnet")
    from _tiny_model import make_model

    return make_model(tmp_path_factory.mktemp("batch_model") / "model", tile_size=64)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 slides: 8 synthetic ones (2048 x 1024), a truncated copy and a text file named .svs."""
    from prostate_fast.synthetic import make_synthetic

    gen, folder = tmp_path_factory.mktemp("batch_gen"), tmp_path_factory.mktemp("batch_slides")
    for i, name in enumerate(GOOD):
        s = make_synthetic(
            gen,
            name=name,
            width=2048,
            height=1024,
            seed=40 + i,
            n_cores=2,
            n_cancer=i % 2,
            n_threads=2,
        )
        os.link(s.slide, folder / s.slide.name)  # only the slide: not the painted copy, mask...
    data = (folder / "slide00.tif").read_bytes()
    (folder / TRUNCATED).write_bytes(data[: len(data) // 2])
    (folder / TEXT).write_text("not a slide\n")
    return folder


def _summary(out: Path) -> dict[str, dict[str, str]]:
    return {r["slide"]: r for r in csv.DictReader((out / SUMMARY).open())}


def _manifests(out: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in out.glob("*/manifest.json")}


def _batch(args: list[str], **kw: object) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prostate_fast.cli", "batch", *args, "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def resumed(slides: Path, model: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The CLI batch killed with SIGKILL after two slides, then rerun; what each step left."""
    out = tmp_path_factory.mktemp("batch_killed") / "out"
    args = [str(slides), "--model", str(model), "-o", str(out), *COMMON]
    proc = _batch([*args, "--workers", "1"], start_new_session=True)  # its own process group
    deadline = time.monotonic() + 240
    while len(_manifests(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its spawn workers
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the batch ended before it could be killed"
    before = {
        stem: (p.read_bytes(), p.stat().st_mtime_ns, p.parent.stat().st_ino)
        for stem, p in _manifests(out).items()
    }
    (out / ".slide05.part-stale1").mkdir()  # what a kill mid-slide leaves
    (out / ".slide05.part-stale1" / "slide05").mkdir()
    rerun = _batch([*args, "--workers", "2"])
    stdout, stderr = rerun.communicate(timeout=300)
    return SimpleNamespace(
        out=out, before=before, code=rerun.returncode, stdout=stdout, stderr=stderr
    )


def test_discover_slides(slides: Path, tmp_path: Path) -> None:
    found = discover_slides(slides)
    assert [p.name for p in found] == sorted(p.name for p in slides.iterdir())
    assert len(found) == 10
    (tmp_path / ".hidden.tif").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "b.SVS").write_bytes(b"x")
    (tmp_path / "a.ndpi").write_bytes(b"x")
    (tmp_path / "c.tif").mkdir()
    assert [p.name for p in discover_slides(tmp_path)] == ["a.ndpi", "b.SVS"]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# the study's slides\n\n{found[0]}\n  sub/x.mrxs  \n# {found[1]}\n")
    assert discover_slides(lst) == [found[0], tmp_path / "sub" / "x.mrxs"]
    assert discover_slides(found[2]) == [found[2]]
    with pytest.raises(FileNotFoundError):
        discover_slides(tmp_path / "missing")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no slide files"):
        discover_slides(tmp_path / "empty.txt")


def test_resume_rules_in_process(slides: Path, model: Path, tmp_path: Path) -> None:
    """workers=0 runs in this process: done, skipped, and what makes a slide be redone."""
    one = [slides / "slide01.tif"]
    out = tmp_path / "out"
    opts = ScreeningOptions(engine="native", n_threads=1, thresholds={"cancer": 0.0})
    kw = {"options": opts, "workers": 0}
    seen: list[SlideResult] = []
    r = run_batch(one, model, out, progress=seen.append, **kw)
    assert [x.status for x in r.results] == ["done"] and seen == list(r.results)
    m = json.loads((out / "slide01" / "manifest.json").read_text())
    assert m["source"]["sha256"] and m["model"]["files"].keys() == {
        "model.json", "model-symbol.json", "model-0003.params",
    }  # fmt: skip
    assert m["settings"]["thresholds"] == {"cancer": 0.0} and set(m["outputs"]) == {
        "overlay", "thumbnail", "geojson", "scores",
    }  # fmt: skip
    assert run_batch(one, model, out, **kw).counts == {"done": 0, "skipped": 1, "error": 0}
    # changed settings, a damaged output, a changed byte (with verify), force: redone
    kw2 = {**kw, "options": replace(opts, outline=1)}
    assert run_batch(one, model, out, **kw2).counts["done"] == 1
    assert run_batch(one, model, out, **kw2).counts["skipped"] == 1
    geo = out / "slide01" / "slide01.geojson"
    geo.write_text(geo.read_text()[:-10])
    assert run_batch(one, model, out, **kw2).counts["done"] == 1
    data = bytearray(geo.read_bytes())
    data[-3] ^= 1
    geo.write_bytes(bytes(data))
    assert run_batch(one, model, out, **kw2).counts["skipped"] == 1  # same size: trusted
    assert run_batch(one, model, out, verify=True, **kw2).counts["done"] == 1
    assert run_batch(one, model, out, force=True, **kw2).counts["done"] == 1
    (out / "slide01" / "manifest.json").write_text(
        '{"format": "prostate-fast batch manifest", "version": 1, "outputs": 3}'
    )
    assert run_batch(one, model, out, **kw2).counts["done"] == 1  # a damaged manifest
    assert not [p for p in out.iterdir() if ".part-" in p.name]
    with pytest.raises(ValueError, match="same stem"):
        run_batch([one[0], slides / "x" / "slide01.svs"], model, out, **kw)
    import fcntl

    with open(out / ".prostate-fast-batch.lock") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(ProstateFastError, match="another prostate-fast batch"):
            run_batch(one, model, out, **kw)


def test_manifest_settings_keep_their_recorded_form() -> None:
    """The settings a manifest records are those earlier versions wrote: old batches resume."""
    from prostate_fast.batch.manifest import settings

    opts = ScreeningOptions(engine="native", thresholds={"cancer": 0.3}, colours={"c": (9, 8, 7)})
    assert settings(opts, {"cancer": 0.5, "g4": 0.5}) == {
        "batch_size": 64, "ctx": "cpu", "engine": "native", "mpp": None,
        "overlay": {"alpha": 0.4, "colours": {"c": [9, 8, 7]}, "compression": "jpeg",
                    "mode": "class", "outline": 0, "quality": 90, "thumbnail_size": 2048},
        "thresholds": {"cancer": 0.3, "g4": 0.5},
    }  # fmt: skip
    assert "level" not in settings(opts, {}) and settings(replace(opts, level=1), {})["level"] == 1


def test_batch_opens_each_slide_once(
    slides: Path, model: Path, tmp_path: Path, monkeypatch
) -> None:
    from _open_count import count_opens

    opened = count_opens(monkeypatch)
    opts = ScreeningOptions(engine="native", n_threads=1)
    res = run_batch([slides / "slide02.tif"], model, tmp_path / "o", opts, workers=0)
    assert res.counts["done"] == 1 and opened == ["slide02.tif"]


def test_killed_batch_resumes(resumed: SimpleNamespace, slides: Path) -> None:
    import openslide

    from prostate_fast.predict import load_score_grid

    out = resumed.out
    assert resumed.code == 3, resumed.stderr  # finished, with failed slides
    done = set(resumed.before)
    assert f"10: {8 - len(done)} done, {len(done)} skipped, 2 failed" in resumed.stdout
    print(f"killed after {len(done)} complete slides; the rerun: {resumed.stdout.strip()}")
    assert 2 <= len(done) < len(GOOD), "the kill came too late to leave slides to resume"
    rows = _summary(out)
    assert len(rows) == 10
    for stem in GOOD:
        want = "skipped" if stem in done else "done"
        assert rows[f"{stem}.tif"]["status"] == want, rows[f"{stem}.tif"]
    for name in (TRUNCATED, TEXT):
        assert rows[name]["status"] == "error" and name in rows[name]["reason"]
        assert name in resumed.stderr and not (out / Path(name).stem).exists()
    for stem, (data, mtime, ino) in resumed.before.items():  # not redone, not even rewritten
        p = out / stem / "manifest.json"
        assert (p.read_bytes(), p.stat().st_mtime_ns, p.parent.stat().st_ino) == (data, mtime, ino)
    assert not [p.name for p in out.iterdir() if ".part" in p.name]
    worklist = list(csv.DictReader((out / WORKLIST).open()))
    assert [r["rank"] for r in worklist] == [str(i) for i in range(1, 11)]
    assert {r["slide"] for r in worklist[:2]} == {TRUNCATED, TEXT}  # failed slides first
    for r in worklist[2:]:
        osr = openslide.OpenSlide(r["overlay"])
        assert osr.dimensions == (2048, 1024)
        osr.close()
        geo = json.loads(Path(r["geojson"]).read_text())
        assert len(geo["features"]) == int(r["n_tiles"]) > 0  # threshold 0: every tile
        grid = load_score_grid(r["scores"])
        assert len(grid) == int(r["n_tiles"]) and grid.slide_name == r["slide"]
        from PIL import Image

        with Image.open(r["thumbnail"]) as im:
            im.verify()


def _crash_on_bad(task: SimpleNamespace) -> SlideResult:
    """A stand-in for the per-slide function: the worker dies on a slide named 'bad'."""
    if Path(task.slide).stem == "bad":
        os._exit(9)
    time.sleep(0.2)
    return SlideResult(Path(task.slide).name, task.slide, "done")


def test_pool_survives_a_dying_worker() -> None:
    from prostate_fast.batch.executors import run_pool

    tasks = [SimpleNamespace(slide=f"/x/{n}.tif") for n in ("a", "bad", "b")]
    got: dict[str, str] = {}
    run_pool(
        tasks,
        _crash_on_bad,
        lambda r: got.__setitem__(r.slide, r.status),
        lambda t, e: got.__setitem__(Path(t.slide).name, f"error: {e}"),
        workers=2,
    )
    assert got.keys() == {"a.tif", "bad.tif", "b.tif"}
    assert got["a.tif"] == got["b.tif"] == "done"
    assert got["bad.tif"].startswith("error: /x/bad.tif: the worker process died")


def test_dask_local_cluster_gives_the_pool_outputs(
    resumed: SimpleNamespace, slides: Path, model: Path, tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    from prostate_fast.predict import load_score_grid

    out = tmp_path / "dask"
    opts = ScreeningOptions(engine="native", n_threads=1, thresholds={"cancer": 0.0})
    res = run_batch(slides, model, out, opts, scheduler="local:2")
    assert res.counts == {"done": 8, "skipped": 0, "error": 2}
    pool = _summary(resumed.out)
    assert {r.slide: r.reason for r in res.failed} == {
        n: pool[n]["reason"] for n in (TRUNCATED, TEXT)
    }
    for stem in GOOD:
        a = json.loads((resumed.out / stem / "manifest.json").read_text())
        b = json.loads((out / stem / "manifest.json").read_text())
        assert a["source"] == {**b["source"], "mtime_ns": a["source"]["mtime_ns"]}
        assert a["model"]["sha256"] == b["model"]["sha256"] and a["settings"] == b["settings"]
        for key in OUTPUTS:  # overlay TIFF, thumbnail PNG, GeoJSON: the same bytes
            assert a["outputs"][key] == b["outputs"][key], (stem, key)
        assert a["row"] | {"seconds": 0} == b["row"] | {"seconds": 0}
        # scores .npz: same arrays and meta; only the timings (and zip timestamps) differ
        ga, gb = (load_score_grid(d / stem / f"{stem}-scores.npz") for d in (resumed.out, out))
        for name in ("tile_rc", "l0_xy", "prob"):
            assert np.array_equal(getattr(ga, name), getattr(gb, name)), (stem, name)
        assert ga.meta() | {"timings": {}} == gb.meta() | {"timings": {}}


def test_cli_batch_bad_input(model: Path, tmp_path: Path, capsys) -> None:
    from prostate_fast.cli.main import main

    assert main(["batch", str(tmp_path / "none"), "--model", str(model), "-o", str(tmp_path)]) == 2
    assert "no such slide folder" in capsys.readouterr().err
    (tmp_path / "a.tif").write_bytes(b"x")
    assert main(["batch", str(tmp_path), "--model", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "model.json" in capsys.readouterr().err and not (tmp_path / "o").exists()
    bad = ["batch", str(tmp_path), "--model", str(model), "-o", str(tmp_path / "o")]
    assert main([*bad, "--scheduler", "local:two"]) == 2
    assert "scheduler must be" in capsys.readouterr().err


def test_an_edited_score_in_the_manifest_is_not_trusted(
    slides: Path, model: Path, tmp_path: Path
) -> None:
    """Issue 13: a manifest whose row was edited is redone; --verify recomputes the score."""
    one = [slides / "slide02.tif"]
    out = tmp_path / "out"
    kw = {"options": ScreeningOptions(engine="native", n_threads=1), "workers": 0}
    first = run_batch(one, model, out, **kw).results[0].row
    path = out / "slide02" / "manifest.json"
    m = json.loads(path.read_text())
    m["row"]["score"] = 0.9998
    path.write_text(json.dumps(m))
    r = run_batch(one, model, out, **kw)  # the row no longer matches its digest: redone
    assert r.counts["done"] == 1 and r.results[0].row.score == pytest.approx(first.score)
    m = json.loads(path.read_text())
    m["row"]["score"] = 0.9998
    m.pop("row_sha256")  # as an older manifest, without the digest
    path.write_text(json.dumps(m))
    assert run_batch(one, model, out, **kw).results[0].row.score == 0.9998  # cheap: trusted
    r = run_batch(one, model, out, verify=True, **kw)  # recomputed from the score grid
    assert r.counts["done"] == 1 and r.results[0].row.score == pytest.approx(first.score)
    rows = list(csv.DictReader(r.worklist.open()))
    assert float(rows[0]["score"]) == pytest.approx(first.score, rel=1e-5)


def test_a_slide_outside_the_domain_needs_a_manual_read(
    slides: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Issue 13: a fluorescence slide gets no score and is ranked with the failures."""
    from _tiny_model import make_model

    from prostate_fast.model.domain import StainDomain

    he = StainDomain(True, (0.35, 0.836, 0.422), 0.28, 10.0, 240.0, 256)
    model = make_model(tmp_path / "model", tile_size=64, domain=he)
    listing = tmp_path / "slides.txt"
    listing.write_text(f"{slides / 'slide00.tif'}\n{data_dir / 'wsi' / 'test3-DAPI-2-387.ndpi'}\n")
    kw = {"options": ScreeningOptions(engine="native", n_threads=1), "workers": 0}
    res = run_batch(listing, model, tmp_path / "out", **kw)
    assert res.counts == {"done": 1, "skipped": 0, "error": 0, "needs manual read": 1}
    rows = list(csv.DictReader(res.worklist.open()))
    assert rows[0]["slide"] == "test3-DAPI-2-387.ndpi" and rows[0]["rank"] == "1"
    assert rows[0]["status"].startswith("needs manual read: dark background")
    assert rows[1]["status"] == "ok"
    summary = _summary(tmp_path / "out")
    assert summary["test3-DAPI-2-387.ndpi"]["status"] == "needs manual read"
    assert not (tmp_path / "out" / "test3-DAPI-2-387").exists()
