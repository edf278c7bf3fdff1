"""The onnx engine's int8 precision: calibration on the validation split, cache, accuracy report,
refusal on an AUC drop, and the option in every command that applies a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _tiny_dataset import make_tiny_dataset

pytest.importorskip("onnxruntime")

from prostate_fast.errors import ModelError  # noqa: E402
from prostate_fast.predict import load_model  # noqa: E402
from prostate_fast.predict.engines import int8 as int8_mod  # noqa: E402
from prostate_fast.screen import ScreeningOptions  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny study CNN trained for 3 epochs on the tiny dataset: (model folder, dataset)."""
    from prostate_fast.train import train

    root = tmp_path_factory.mktemp("int8")
    ds = make_tiny_dataset(root / "ds")
    out = root / "m"
    train(ds, out, epochs=3, lr=0.05, progress=False, n_threads=2, log=lambda line: None)
    return out, ds


def _val_tiles(ds: Path) -> np.ndarray:
    from prostate_fast.dataset import read_records

    return np.stack([rgb for _, rgb, _ in read_records(ds, "val")])


def test_int8_close_to_fp32_and_report(trained) -> None:
    model, ds = trained
    tiles = _val_tiles(ds)
    with load_model(model, engine="onnx", n_threads=2) as fp32:
        p32 = fp32.predict_batch(tiles)
    with load_model(model, engine="onnx", precision="int8", n_threads=2) as q:
        assert q.precision == "int8" and "precision=int8" in repr(q)
        p8 = q.predict_batch(tiles)
        report = q.int8_report
    assert np.abs(p8 - p32).max() < 0.05
    assert (model / "model-int8.onnx").is_file()
    on_disk = json.loads((model / "model-int8.json").read_text())
    assert on_disk == report
    assert report["validation_tiles"] == len(tiles)
    assert 0 < report["calibration_tiles"] <= int8_mod.CALIBRATION_TILES
    assert report["auc_fp32"] - report["auc_int8"] <= int8_mod.INT8_MAX_AUC_DROP
    assert report["decisions_changed"] == round(report["decisions_changed_share"] * len(tiles))
    assert report["max_abs_prob_diff"] == pytest.approx(np.abs(p8 - p32).max(), abs=1e-5)
    import onnx

    ops = {n.op_type for n in onnx.load(str(model / "model-int8.onnx")).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops
    assert ("QGemm" in ops) == (report["dense_layers"] == "int8")


def test_int8_cache_reused(trained, monkeypatch) -> None:
    model, _ = trained
    load_model(model, engine="onnx", precision="int8", n_threads=2).close()
    net = model / "model-int8.onnx"
    before = net.stat().st_mtime_ns, net.stat().st_ino

    def boom(*a, **k):
        raise AssertionError("recalibrated")

    monkeypatch.setattr(int8_mod, "_make", boom)
    with load_model(model, engine="onnx", precision="int8", n_threads=2) as q:
        assert q.int8_report is not None
    assert (net.stat().st_mtime_ns, net.stat().st_ino) == before


def _copy_edited(model: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``model`` (int8 cache made) whose ``model-int8.json`` has ``edit(report)``."""
    load_model(model, engine="onnx", precision="int8", n_threads=2).close()
    copy = tmp_path / "m"
    shutil.copytree(model, copy)
    rep = copy / "model-int8.json"
    report = json.loads(rep.read_text())
    rep.write_text(json.dumps(report | edit(report)))
    return copy


def test_int8_refused_on_auc_drop(trained, tmp_path) -> None:
    model, _ = trained
    copy = _copy_edited(model, tmp_path, lambda r: {"auc_int8": r["auc_fp32"] - 0.01})
    with pytest.raises(ModelError, match=r"int8 refused: validation AUC drops by 0\.0100") as e:
        load_model(copy, engine="onnx", precision="int8", n_threads=2)
    assert "\n" not in str(e.value) and "model-int8.json" in str(e.value)
    # a looser tolerance accepts it; one under the real drop refuses the original
    load_model(copy, engine="onnx", precision="int8", n_threads=2, max_auc_drop=0.02).close()
    real = json.loads((model / "model-int8.json").read_text())["auc_drop"]
    if real > 0:
        with pytest.raises(ModelError, match="int8 refused"):
            load_model(model, engine="onnx", precision="int8", max_auc_drop=real / 2)
    with pytest.raises(ValueError, match="max_auc_drop"):
        load_model(model, engine="onnx", precision="int8", max_auc_drop=-1.0)


def test_int8_needs_the_validation_split(trained, tmp_path) -> None:
    model, _ = trained
    copy = tmp_path / "m"
    shutil.copytree(model, copy, ignore=shutil.ignore_patterns("model-int8.*"))
    meta = json.loads((copy / "model.json").read_text())
    meta["training"]["dataset"] = str(tmp_path / "gone")
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="validation split .* cannot be read") as e:
        load_model(copy, engine="onnx", precision="int8", n_threads=2)
    assert "\n" not in str(e.value)
    assert not (copy / "model-int8.onnx").exists()


def test_int8_stale_cache_remade(trained, tmp_path) -> None:
    model, _ = trained
    copy = _copy_edited(model, tmp_path, lambda r: {"source_sha256": "0" * 64})  # another onnx
    rep = copy / "model-int8.json"
    with load_model(copy, engine="onnx", precision="int8", n_threads=2) as q:
        assert q.int8_report["source_sha256"] != "0" * 64
    assert json.loads(rep.read_text())["source_sha256"] != "0" * 64


def test_precision_options_checked(trained) -> None:
    model, _ = trained
    with pytest.raises(ValueError, match="needs engine 'onnx'"):
        load_model(model, engine="gluon", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        ScreeningOptions(engine="onnx", precision="bf16")
    with pytest.raises(ValueError, match="needs engine 'onnx'"):
        ScreeningOptions(engine="native", precision="int8")
    opts = ScreeningOptions(engine="onnx", precision="int8", n_threads=2)
    assert opts.predict_kwargs()["precision"] == "int8"
    with opts.load_model(model) as q:
        assert q.precision == "int8"


@pytest.mark.parametrize("command", ["predict", "run", "screen", "batch"])
def test_precision_in_every_command(command, capsys) -> None:
    from prostate_fast.cli.main import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--precision {fp32,fp16,int8}" in capsys.readouterr().out


def test_cli_int8_needs_onnx(trained, tmp_path, capsys) -> None:
    from prostate_fast.cli.main import main

    model, _ = trained
    slide = tmp_path / "s.tif"
    slide.write_bytes(b"")
    code = main(
        ["predict", str(model), str(slide), "-o", str(tmp_path / "o")]
        + ["--engine", "gluon", "--precision", "int8"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "needs engine 'onnx'" in err and "\n" not in err


def test_int8_is_checked_on_every_slide_and_falls_back_to_fp32(trained, tmp_path) -> None:
    """predict_slide checks int8 against fp32 on the slide's sampled tissue tiles: faithful, the
    slide is scored in int8; a changed decision or a probability moved past
    INT8_SLIDE_MAX_DIFF, the slide is scored in fp32 with a warning naming it."""
    from prostate_fast.predict import predict_slide
    from prostate_fast.predict.core import INT8_SLIDE_MAX_DIFF
    from prostate_fast.synthetic import make_synthetic

    model, _ = trained
    slide = make_synthetic(tmp_path, width=2048, height=1024, seed=5).slide
    kw = {"ignore_domain": True, "ignore_scale": True, "level": 0}
    with load_model(model, engine="onnx", n_threads=2) as fp32:
        want = predict_slide(fp32, slide, **kw)
    with load_model(model, engine="onnx", precision="int8", n_threads=2) as q:
        int8 = predict_slide(q, slide, **kw)
        assert int8.engine == "onnx-int8"  # faithful on its sample: scored in int8 ...
        assert np.abs(int8.prob - want.prob).max() > 0  # ... which is not fp32
        twin = q.fp32_twin()
        assert twin.precision == "fp32" and q.fp32_twin() is twin and twin.fp32_twin() is twin

        real_run = q._run

        def drifting(x: np.ndarray) -> np.ndarray:  # int8 past its calibrated ranges
            p = real_run(x)
            p[:, 1] = np.clip(p[:, 1] + 2 * INT8_SLIDE_MAX_DIFF, 0, 1)
            p[:, 0] = 1 - p[:, 1]
            return p

        q._run = drifting  # type: ignore[method-assign]
        with pytest.warns(UserWarning, match=slide.name) as seen:
            fell = predict_slide(q, slide, **kw)
        text = str(seen[0].message)
        assert "int8 differs from fp32" in text and "scored in fp32" in text
        assert fell.engine == "onnx"
        np.testing.assert_allclose(fell.prob, want.prob, atol=1e-6)
    assert q._twin is None and twin._lane_pool is None  # closed with it
