"""Train stage: the study's CNN on tiny datasets; export, determinism, resume, errors, accuracy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tiny_dataset import make_tiny_dataset

from prostate_fast.cli.main import main
from prostate_fast.errors import DatasetError, ModelError
from prostate_fast.model.networks import StudyConfig, build_network, network_spec
from prostate_fast.train import train

FAST = {"recipe": "study", "lr": 0.05, "progress": False, "n_threads": 2, "log": lambda line: None}


def _params(path: Path) -> dict[str, np.ndarray]:
    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def _same(a: Path, b: Path) -> bool:
    pa, pb = _params(a), _params(b)
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    """160 training tiles (4 slides), 40 validation tiles (1 slide), 32 px, 50-50."""
    return make_tiny_dataset(tmp_path_factory.mktemp("train") / "ds")


@pytest.fixture(scope="module")
def trained(ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    lines: list[str] = []
    result = train(ds, out, epochs=3, **{**FAST, "log": lines.append}, log_interval=2)
    return out, result, lines


def test_import_does_not_load_mxnet() -> None:
    code = (
        "import sys, prostate_fast.train, prostate_fast.evaluate, prostate_fast.train.check, "
        "prostate_fast.model.networks; assert 'mxnet' not in sys.modules, 'mxnet imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_networks_and_specs() -> None:
    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    spec = network_spec("study", 2, 128)
    assert spec["conv_filters"] == (32, 64) and spec["dense_units"] == (256, 128, 64)
    assert StudyConfig().feature_size(128) == 29
    net = build_network("study", 3, tile_size=32, config=StudyConfig((8, 16), 3, 2, (16, 8, 4)))
    net.initialize(mx.init.Xavier())
    assert net(mx.nd.zeros((2, 3, 32, 32))).shape == (2, 3)
    res = build_network("resnet10", 2, tile_size=32)
    res.initialize(mx.init.Xavier())
    assert res(mx.nd.zeros((1, 3, 32, 32))).shape == (1, 2)
    with pytest.raises(ValueError, match="network"):
        network_spec("vgg", 2, 128)
    with pytest.raises(ValueError, match="too small"):
        network_spec("study", 2, 12)
    with pytest.raises(ValueError, match="n_classes"):
        network_spec("study", 1, 128)


def test_outputs_and_logs(trained) -> None:
    out, result, lines = trained
    names = {p.name for p in out.iterdir()}
    best = result.best_epoch
    assert {
        "model-symbol.json",
        f"model-{best:04d}.params",
        "model.json",
        "log.csv",
        "train.log",
        "accuracy.png",
        "state.json",
        "checkpoints",
    } <= names
    assert not out.with_name("m.partial").exists()
    info = json.loads((out / "model.json").read_text())
    assert info["format"] == "prostate-fast-model" and info["classes"] == ["benign", "cancer"]
    assert info["tile_size"] == 32 and info["normalisation"]["scale"] == pytest.approx(1 / 255)
    assert info["epoch"] == best and info["input_name"] == "data" and info["layout"] == "NCHW"
    assert info["magnification"] == 20.0 and info["colours"]["cancer"] == [0, 255, 0]
    assert 0 <= info["threshold"]["cancer"] <= 1
    assert info["threshold"]["target_sensitivity"] == 0.99
    assert info["architecture"]["dense_units"] == [256, 128, 64]
    assert info["training"]["seed"] == 0 and info["training"]["mxnet"] == "1.9.1"
    # the stain domain of the train split (issue 13): prediction refuses slides outside it
    dom = info["domain"]
    assert dom["brightfield"] is True and dom["n_tiles"] == 160
    assert sum(v * v for v in dom["od_direction"]) == pytest.approx(1.0, abs=1e-4)
    from prostate_fast.model import read_model_info

    assert read_model_info(out).domain.brightfield
    csv_lines = (out / "log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy")
    assert len(csv_lines) == 4
    assert any(
        line.startswith("Epoch[0] Batch [2]\tSpeed: ") and "accuracy=" in line for line in lines
    )
    for key in ("Train-accuracy=", "Time cost=", "Validation-accuracy=", "Validation-sensitivity="):
        assert any(line.startswith(f"Epoch[2] {key}") for line in lines), key
    assert (out / "train.log").read_text().splitlines() == lines
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "epoch-0003.params" in ckpts and f"epoch-{best:04d}.states" in ckpts


def test_export_loads_in_symbolblock_and_module(trained) -> None:
    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    out, result, _ = trained
    best = result.best_epoch
    net = build_network("study", 2, tile_size=32)
    net.load_parameters(str(out / "checkpoints" / f"epoch-{best:04d}.params"))
    x = mx.nd.array(np.random.default_rng(0).random((5, 3, 32, 32), np.float32))
    want = mx.nd.softmax(net(x)).asnumpy()
    sym, params = out / "model-symbol.json", out / f"model-{best:04d}.params"
    block = mx.gluon.SymbolBlock.imports(str(sym), ["data"], str(params))
    np.testing.assert_allclose(block(x).asnumpy(), want, atol=1e-6)
    s, arg, aux = mx.model.load_checkpoint(str(out / "model"), best)
    mod = mx.mod.Module(s, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", x.shape)], for_training=False)
    mod.set_params(arg, aux)
    mod.forward(mx.io.DataBatch([x]), is_train=False)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), want, atol=1e-6)
    np.testing.assert_allclose(want.sum(axis=1), 1, atol=1e-6)


def test_same_seed_same_weights(ds, trained, tmp_path: Path) -> None:
    out, result, _ = trained
    again = train(ds, tmp_path / "again", epochs=3, **FAST)
    assert _same(
        out / "checkpoints" / "epoch-0003.params",
        again.model_dir / "checkpoints" / "epoch-0003.params",
    )
    strip = [
        {k: v for k, v in r.items() if k not in ("time_s", "samples_per_s")}
        for r in (result.history, again.history)
        for r in r
    ]
    assert strip[:3] == strip[3:]
    other = train(ds, tmp_path / "other", epochs=3, **{**FAST, "seed": 1})
    assert not _same(
        other.model_dir / "checkpoints" / "epoch-0003.params",
        again.model_dir / "checkpoints" / "epoch-0003.params",
    )


def test_resume_finished_run_equals_uninterrupted(ds, trained, tmp_path: Path) -> None:
    out, result, _ = trained
    m = tmp_path / "m"
    train(ds, m, epochs=1, **FAST)
    with pytest.raises(FileExistsError):
        train(ds, m, epochs=3, **FAST)
    resumed = train(ds, m, epochs=3, resume=True, **FAST)
    assert _same(m / "checkpoints" / "epoch-0003.params", out / "checkpoints" / "epoch-0003.params")
    assert resumed.best_epoch == result.best_epoch
    assert _same(
        m / f"model-{resumed.best_epoch:04d}.params", out / f"model-{result.best_epoch:04d}.params"
    )
    assert len((m / "log.csv").read_text().splitlines()) == 4
    with pytest.raises(ModelError, match="already trained"):
        train(ds, m, epochs=3, resume=True, **FAST)
    with pytest.raises(ModelError, match="cannot resume with different lr"):
        train(ds, m, epochs=4, resume=True, **{**FAST, "lr": 0.01})


def test_resume_interrupted_run(ds, trained, tmp_path: Path) -> None:
    out, _, _ = trained
    m = tmp_path / "m"

    def stop(line: str) -> None:
        if line.startswith("Epoch[1] Validation-loss"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(ds, m, epochs=3, **{**FAST, "log": stop})
    assert not m.exists() and (tmp_path / "m.partial" / "state.json").is_file()
    with pytest.raises(FileExistsError, match="--resume"):
        train(ds, m, epochs=3, **FAST)
    train(ds, m, epochs=3, resume=True, **FAST)
    assert not (tmp_path / "m.partial").exists()
    assert _same(m / "checkpoints" / "epoch-0003.params", out / "checkpoints" / "epoch-0003.params")


def test_overwrite_and_options(ds, tmp_path: Path) -> None:
    m = tmp_path / "m"
    train(ds, m, epochs=1, **FAST)
    r = train(
        ds,
        m,
        epochs=2,
        overwrite=True,
        class_weights="dataset",
        lr_steps=[2],
        select="accuracy",
        augment=True,
        **FAST,
    )
    assert [row["lr"] for row in r.history] == pytest.approx([0.05, 0.005])
    info = json.loads((m / "model.json").read_text())
    assert info["training"]["augment"] and info["training"]["select"] == "accuracy"
    with pytest.raises(ValueError, match="class_weights"):
        train(ds, tmp_path / "x", epochs=1, class_weights=[1.0], **FAST)
    with pytest.raises(ValueError, match="select"):
        train(ds, tmp_path / "x", epochs=1, select="f1", **FAST)
    with pytest.raises(ValueError, match="kvstore"):
        train(ds, tmp_path / "x", epochs=1, kvstore="nccl2", **FAST)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


# -- bad datasets -------------------------------------------------------------------------------
def _copy(ds: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bad"
    shutil.copytree(ds, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info))


def test_missing_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset.json"):
        train(tmp_path, tmp_path / "m", epochs=1, **FAST)


def test_class_count_mismatch(ds, tmp_path: Path) -> None:
    bad = _copy(ds, tmp_path)
    _edit_json(bad / "dataset.json", classes=["benign", "g3", "g4"])
    with pytest.raises(DatasetError, match="per_class"):
        train(bad, tmp_path / "m", epochs=1, **FAST)


def test_single_class_dataset(tmp_path: Path) -> None:
    bad = make_tiny_dataset(tmp_path / "ds", per_slide=4, val_per_slide=4, train_slides=1)
    info = json.loads((bad / "dataset.json").read_text())
    info["classes"] = ["cancer"]
    for s in info["splits"].values():
        s["per_class"] = [sum(s["per_class"])]
    (bad / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="two classes"):
        train(bad, tmp_path / "m", epochs=1, **FAST)


def test_record_label_outside_classes(tmp_path: Path) -> None:
    import cv2

    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    bad = make_tiny_dataset(tmp_path / "ds", per_slide=8, val_per_slide=4, train_slides=1)
    w = mx.recordio.MXIndexedRecordIO(str(bad / "train.idx"), str(bad / "train.rec"), "w")
    img = np.zeros((32, 32, 3), np.uint8)
    for i in range(8):
        header = mx.recordio.IRHeader(0, float(5 if i == 6 else i % 2), i, 0)
        w.write_idx(i, mx.recordio.pack(header, cv2.imencode(".png", img)[1].tobytes()))
    w.close()
    with pytest.raises(DatasetError, match=r"train\.rec: label 5 outside the 2 classes"):
        train(bad, tmp_path / "m", epochs=1, **FAST)
    assert not (tmp_path / "m.partial").exists()


def test_resume_with_other_classes(ds, trained, tmp_path: Path) -> None:
    out, _, _ = trained
    three = make_tiny_dataset(
        tmp_path / "ds3",
        per_slide=4,
        val_per_slide=4,
        train_slides=1,
        classes=["benign", "cancer", "other"],
    )
    m = tmp_path / "m"
    shutil.copytree(out, m)
    with pytest.raises(ModelError, match="classes"):
        train(three, m, epochs=5, resume=True, **FAST)


def test_empty_split(ds, tmp_path: Path) -> None:
    bad = _copy(ds, tmp_path)
    (bad / "val.idx").write_text("")
    with pytest.raises(DatasetError, match=r"val\.rec.*no records"):
        train(bad, tmp_path / "m", epochs=1, **FAST)
    assert not (tmp_path / "m.partial").exists()


@pytest.mark.parametrize("damage", ["garble", "truncate"])
def test_corrupt_rec(ds, tmp_path: Path, damage: str) -> None:
    bad = _copy(ds, tmp_path)
    data = bytearray((bad / "train.rec").read_bytes())
    if damage == "garble":
        data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    else:
        data = data[: len(data) // 3]
    (bad / "train.rec").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"train\.rec: corrupt or truncated"):
        train(bad, tmp_path / "m", epochs=1, **FAST)


def test_corrupt_image_inside_valid_record(tmp_path: Path) -> None:
    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    bad = make_tiny_dataset(tmp_path / "ds", per_slide=8, val_per_slide=4, train_slides=1)
    w = mx.recordio.MXIndexedRecordIO(str(bad / "train.idx"), str(bad / "train.rec"), "w")
    for i in range(8):
        w.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, float(i % 2), i, 0), b"junk"))
    w.close()
    with pytest.raises(DatasetError, match=r"train\.rec: unreadable record"):
        train(bad, tmp_path / "m", epochs=1, **FAST)


def test_cli_train_and_errors(ds, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = [
        "train",
        str(ds),
        "-o",
        str(out),
        "--epochs",
        "1",
        "--lr",
        "0.05",
        "--threads",
        "2",
        "--dense-units",
        "32,16,8",
        "--quiet",
        "--recipe",
        "study",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "model:" in text and "threshold:" in text
    assert json.loads((out / "model.json").read_text())["architecture"]["dense_units"] == [
        32,
        16,
        8,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
    assert main(["train", str(tmp_path / "none"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.json" in err[0]


# -- accuracy on synthetic slides ---------------------------------------------------------------
def test_accuracy_on_synthetic_slides(tmp_path: Path) -> None:
    """4 training slides + 1 validation slide (synthetic, 2048 x 1024), 32 px tiles at 20x,
    50-50 train balance: the study's CNN reaches >= 90 % validation accuracy in a few epochs.

    The study's learning rate (0.001) needs about 100 epochs of a real dataset; this short run
    uses 0.05 with batch 16 (the network and everything else as in the study).
    """
    from prostate_fast.dataset import build_dataset
    from prostate_fast.label import label_tiles
    from prostate_fast.slide import open_slide
    from prostate_fast.synthetic import make_synthetic
    from prostate_fast.tile import full_grid

    tables = []
    for i in range(5):
        made = make_synthetic(
            tmp_path / "slides",
            name=f"s{i}",
            width=2048,
            height=1024,
            seed=20 + i,
            n_cancer=3,
            n_cores=3,
        )
        with open_slide(made.slide) as slide:
            grid = full_grid(slide, slide.choose_level(magnification=20.0), 32)
            tables.append(label_tiles(slide, made.mask, grid, n_threads=2))
    ds = tmp_path / "ds"
    build_dataset(tables, ds, split={"val": ["s4"]}, balance="50:50", seed=0, n_threads=2)
    result = train(
        ds, tmp_path / "m", epochs=8, batch_size=16, lr_steps=[7], select="accuracy", **FAST
    )
    accuracy = [round(r["val_accuracy"], 3) for r in result.history]
    assert result.best["val_accuracy"] >= 0.90, accuracy
    assert result.best["val_auc"] >= 0.95, accuracy


# -- recipes (issue 14) -----------------------------------------------------------------------------
def test_recipe_study_is_the_study_exactly() -> None:
    """``--recipe study``: the study's CNN, input / 255 only, Xavier, SGD lr 0.001, momentum 0.8,
    batch 32, 100 epochs, no weight decay, weights, augmentation or steps, epoch by accuracy."""
    from prostate_fast.train import RECIPES, resolve_recipe

    r = resolve_recipe("study")
    assert (r["network"], r["epochs"], r["batch_size"], r["lr"], r["momentum"]) == (
        "study",
        100,
        32,
        0.001,
        0.8,
    )
    assert (r["wd"], r["lr_steps"], r["class_weights"], r["augment"]) == (0.0, [], None, False)
    assert (r["standardise"], r["init"], r["select"], r["select_floor"]) == (
        False,
        "xavier",
        "accuracy",
        0.0,
    )
    d = resolve_recipe("default", epochs=20, lr=0.01)
    assert d["lr"] == 0.01 and d["lr_steps"] == [13, 18] and d["class_weights"] == "dataset"
    assert d["standardise"] and d["select"] == "auc" and d["select_floor"] == 0.5
    assert set(RECIPES["default"]) == set(RECIPES["study"])
    with pytest.raises(ValueError, match="recipe"):
        resolve_recipe("paper")


def test_cli_recipe_study_trains_with_the_study_settings(ds, tmp_path: Path) -> None:
    out = tmp_path / "m"
    argv = ["train", str(ds), "-o", str(out), "--recipe", "study", "--epochs", "1", "--quiet"]
    assert main([*argv, "--threads", "2"]) == 0
    t = json.loads((out / "model.json").read_text())["training"]
    assert (t["recipe"], t["lr"], t["momentum"], t["batch_size"], t["wd"]) == (
        "study",
        0.001,
        0.8,
        32,
        0.0,
    )
    assert t["architecture"]["name"] == "study" and "standardise" not in t["architecture"]
    assert t["init"] == "xavier" and t["select"] == "accuracy" and t["class_weights"] == [1, 1]


def test_default_recipe_standardises_inside_the_exported_network(ds, tmp_path: Path) -> None:
    """The default recipe measures the train split's channel mean and std, stores them in
    model.json and as constants of the network's first layer: every engine applies them."""
    from prostate_fast.dataset import read_records
    from prostate_fast.predict import load_model

    out = tmp_path / "d"
    result = train(ds, out, epochs=3, lr_steps=[], progress=False, n_threads=2, log=lambda s: 0)
    info = json.loads((out / "model.json").read_text())
    arch = info["architecture"]
    assert arch["name"] == "resnet10" and arch["initialisation"] == "scaled"
    px = np.concatenate([rgb.reshape(-1, 3) for _, rgb, _ in read_records(ds, "train")]) / 255
    np.testing.assert_allclose(arch["standardise"]["mean"], px.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(arch["standardise"]["std"], px.std(axis=0), rtol=1e-5)
    assert result.select == "auc"
    tiles = np.stack([rgb for _, rgb, _ in read_records(ds, "val")][:8])
    engines = ("gluon", "native", "onnx")
    probs = [load_model(out, engine=e, n_threads=2).predict_batch(tiles) for e in engines]
    for p in probs[1:]:
        np.testing.assert_allclose(p, probs[0], atol=1e-5)


def test_selection_never_picks_a_constant_model(ds, tmp_path: Path) -> None:
    from prostate_fast.errors import ModelError
    from prostate_fast.metrics import both_rates, selection_key, validation_metrics

    y = np.array([0, 0, 0, 1, 1, 1])
    assert both_rates(y, np.full(6, 0.7)) == 0.0  # a constant model
    assert both_rates(y, np.array([0.1, 0.2, 0.9, 0.8, 0.95, 0.99])) == pytest.approx(2 / 3)
    # ranks perfectly but every probability is above 0.5 (arg-max says "all cancer")
    shifted = np.array([0.6, 0.61, 0.62, 0.9, 0.91, 0.92])
    row = validation_metrics(y, np.stack([1 - shifted, shifted], 1), ("benign", "cancer"))
    assert row["val_specificity"] == 0.0 and row["val_both"] == 1.0
    assert selection_key("auc", row, 0.5) == 1.0
    constant = validation_metrics(
        y, np.tile([0.3, 0.7], (6, 1)).astype(np.float32), ("benign", "cancer")
    )
    assert selection_key("auc", constant, 0.5) == -np.inf
    assert selection_key("auc", {**constant, "val_auc": 0.5}) == 0.5  # no floor: the study's
    nan = {"val_both": float("nan"), "val_balanced_accuracy": 0.5}
    assert selection_key("balanced_accuracy", nan, 0.5) == -np.inf
    # no epoch reaches the floor: nothing is exported, the run is kept for --resume
    out = tmp_path / "m"
    with pytest.raises(ModelError, match="no epoch reached validation sensitivity"):
        train(ds, out, epochs=1, select_floor=1.0, **FAST)
    assert not out.exists() and (tmp_path / "m.partial" / "state.json").is_file()


def test_colour_augmentation_is_seeded_and_stain_reaches_model_json(ds, tmp_path: Path) -> None:
    """Same seed, same augmented batch; the dataset's stain target is copied to model.json."""
    from prostate_fast.dataset import record_iter
    from prostate_fast.model import read_model_info
    from prostate_fast.stain import StainFit

    def batch(augment: object, seed: int) -> np.ndarray:
        it = record_iter(ds, "train", batch_size=16, augment=augment, seed=seed, n_threads=1)
        return it.next().data[0].asnumpy()

    colour = batch("colour", 5)
    np.testing.assert_array_equal(colour, batch("colour", 5))
    np.testing.assert_array_equal(batch(True, 5), batch("flips", 5))
    assert not np.array_equal(colour, batch("flips", 5))
    assert not np.array_equal(colour, batch("colour", 6))
    assert colour.min() >= 0 and colour.max() <= 1.0 + 1e-6  # scaled like the plain reader
    with pytest.raises(ValueError, match="augment"):
        record_iter(ds, "train", augment="hsv")
    from prostate_fast.train.recipes import RECIPES

    assert RECIPES["default"]["augment"] == "colour" and RECIPES["study"]["augment"] is False
    copy = tmp_path / "ds"
    shutil.copytree(ds, copy)
    meta = json.loads((copy / "dataset.json").read_text())
    target = {"method": "macenko", "stain_matrix": [[0.6, 0.2], [0.7, 0.8], [0.4, 0.56]]}
    meta["stain"] = {**target, "max_conc": [1.9, 1.0]}
    (copy / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "m"
    assert (
        main(
            [
                "train",
                str(copy),
                "-o",
                str(out),
                "--recipe",
                "study",
                "--epochs",
                "1",
                "--augment",
                "colour",
                "--threads",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    info = read_model_info(out)
    assert isinstance(info.stain, StainFit) and info.meta["training"]["augment"] == "colour"
    np.testing.assert_allclose(info.stain.max_conc, [1.9, 1.0])
