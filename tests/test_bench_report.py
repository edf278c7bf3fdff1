"""tools/bench_report.py: the report's tables from a small fake pytest-benchmark JSON (no runs)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def br():
    spec = importlib.util.spec_from_file_location(
        "bench_report", ROOT / "tools" / "bench_report.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bt(br):
    """tools/bench_tables.py (on the path once bench_report is loaded): the tables."""
    import bench_tables

    return bench_tables


FACTS = {"slide": "1000x500", "slide_gp": 0.0005, "grid_tiles": 1000, "tissue_tiles": 200}


def _bench(file, name, median, extra=None, group=None, rounds=3):
    return {
        "group": group,
        "name": name,
        "fullname": f"bench/{file}.py::{name}",
        "params": None,
        "stats": {"min": median * 0.9, "median": median, "mean": median, "rounds": rounds},
        "extra_info": extra or {},
    }


def _e2e(kind, stage, s, **extra):
    info = {"e2e": kind, "stage": stage, "s_per_slide": s, **FACTS, **extra}
    return _bench("bench_end_to_end", f"test_{kind}[{stage}]", s / 3, info, f"e2e-{kind}")


def fake_json() -> dict:
    ours = {
        "tissue": 0.5,
        "white": 1.0,
        "label": 2.0,
        "pack": 1.5,
        "predict": 4.0,
        "overlay": 3.0,
        "preprocess": 4.0,
        "chain": 12.0,
    }
    base = {"convert": 6.0, "crop": 2.0, "predict": 40.0}
    per_tile = {"tiles": 0.01, "label": 0.002, "white": 0.05, "blend": 0.004, "montage": 0.001}
    b = [_e2e("ours", k, v) for k, v in ours.items()]
    b += [
        _e2e("baseline", k, v, **({"extrapolated_by_area": 2.0} if k == "crop" else {}))
        for k, v in base.items()
    ]
    b += [
        _e2e(
            "baseline",
            k,
            t * 1000,
            extrapolated_from=64 if k == "white" else 256,
            extrapolated_to=1000,
            s_per_tile=t,
        )
        for k, t in per_tile.items()
    ]
    b += [_e2e("alt", k, v) for k, v in {"label": 4.0, "pack": 3.0, "overlay": 2.5}.items()]
    b += [
        _bench("bench_tissue", "test_native[all-cores]", 0.01, {"us_per_tile": 2.0, "tiles": 2048}),
        _bench("bench_tissue", "test_native[1-thread]", 0.02, {"us_per_tile": 4.0}),
        _bench("bench_tissue", "test_numpy", 0.1, {"us_per_tile": 40.0}),
        _bench("bench_tissue", "test_opencv", 0.05, {"us_per_tile": 20.0}),
        _bench("bench_tissue", "test_baseline", 0.4, {"us_per_tile": 50_000.0}),
        _bench("bench_label", "test_native[all-cores]", 0.01, {"us_per_tile": 10.0}),
        _bench("bench_label", "test_opencv_batch", 0.01, {"us_per_tile": 8.0}),
        _bench("bench_predict", "test_engine[native]", 0.5, {"tiles_per_s": 500.0}),
        _bench("bench_predict", "test_engine[gluon]", 0.6, {"tiles_per_s": 400.0}),
        _bench("bench_predict", "test_engine[onnx]", 0.6, {"tiles_per_s": 450.0}),
        _bench("bench_predict", "test_baseline_one_tile_per_call", 5, {"tiles_per_s": 50.0}),
        _bench("bench_overlay", "test_ours[all-cores]", 4.0),
        _bench("bench_overlay", "test_pyvips", 5.0),
        _bench("bench_overlay", "test_study_way", 1.0),  # a sample's time, no per-slide figure
        _bench("bench_dataset", "test_pack[jpeg]", 10.0, {"count": 20480, "tiles/s": 2000.0}),
        _bench(
            "bench_dataset",
            "test_baseline_tile_files",
            10.0,
            {"count": 2048, "tiles/s": 400.0, "img/s": 4000.0},
        ),
        _bench("bench_dataset", "test_read[jpeg-False]", 3.0, {"count": 8000, "img/s": 4000.0}),
    ]
    return {"benchmarks": b, "datetime": "2026-01-01T00:00:00", "commit_info": {"id": "abc123"}}


def test_load_entries_and_cost(bt) -> None:
    entries = bt.load_entries(fake_json())
    e = bt.find(entries, "bench_tissue", "test_native[all-cores]")
    assert (e.file, e.group, e.median) == ("bench_tissue", None, 0.01)
    assert bt.cost(e, "tile", ("us_per_tile",)) == pytest.approx(2e-6)
    assert bt.cost(e, "tile") == pytest.approx(0.01 / 2048)  # median per recorded tile
    p = bt.find(entries, "bench_predict", "test_engine[native]")
    assert bt.cost(p, "tile", ("tiles_per_s",)) == pytest.approx(1 / 500)
    d = bt.find(entries, "bench_dataset", "test_baseline_tile_files")
    assert bt.cost(d, "tile", ("img/s",)) == pytest.approx(1 / 4000)
    assert bt.cost(d, "tile", ("tiles/s",)) == pytest.approx(1 / 400)
    study = bt.find(entries, "bench_overlay", "test_study_way")
    assert bt.cost(study, "slide", ("extrapolated_s", "s_per_slide"), strict=True) is None
    assert bt.cost(study, "slide", ("extrapolated_s", "s_per_slide")) == 1.0
    assert bt.cost(None, "tile") is None
    assert bt.find(entries, "bench_tissue", "missing") is None


def test_table3_rows(bt) -> None:
    rows = {r["key"]: r for r in bt.table3(bt.e2e_stages(bt.load_entries(fake_json())))}
    assert list(rows) == [r[0] for r in bt.TABLE3] + ["total"]
    white = rows["white"]
    assert white["study_s"] == 3 * 3600 + 45 * 60
    assert white["baseline_s"] == pytest.approx(50.0) and white["ours_s"] == 1.0
    assert white["speedup"] == pytest.approx(50.0) and white["extrapolated_from"] == 64
    assert rows["convert"]["removed"] and rows["convert"]["ours_s"] is None
    assert rows["crop"]["speedup"] == pytest.approx(4.0)
    assert rows["crop"]["extrapolated_by_area"] == 2.0
    assert rows["tiles"]["baseline_s"] == pytest.approx(10.0) and rows["tiles"]["ours_s"] == 1.5
    assert rows["blend"]["speedup"] == pytest.approx(4.0 / 3.0)  # blend vs our whole overlay
    total = rows["total"]
    assert total["baseline_s"] == pytest.approx(6 + 2 + 10 + 2 + 50 + 40 + 4 + 1)
    assert total["ours_s"] == 12.0 and total["speedup"] == pytest.approx(115 / 12)
    assert total["study_s"] == 45 + 12 + 720 + 13500 + 120 + 1020 + 27


def test_preprocess_and_the_study_data_set(bt) -> None:
    pre = bt.preprocess(bt.e2e_stages(bt.load_entries(fake_json())))
    # baseline: (0.01 + 0.002 + 0.05) s per full-grid tile; ours: 1000 tiles in 4 s
    assert pre["baseline_s"] == pytest.approx(62.0)
    assert pre["baseline_rate"] == pytest.approx(1000 / 62)
    assert pre["ours_rate"] == pytest.approx(250.0)
    assert pre["ratio"] == pytest.approx(250 / (1000 / 62))
    assert pre["baseline_study_s"] == pytest.approx(400_000 * 0.062)
    assert pre["ours_study_s"] == pytest.approx(400_000 / 250)
    assert pre["ours_study_s_all_kept"] == pytest.approx(400_000 / 50)  # 200 kept tiles in 4 s
    assert pre["sample"] == {"tiles": 256, "label": 256, "white": 64}
    assert bt.preprocess({}) is None


def test_kernel_rows_best_alternative_and_targets(bt) -> None:
    entries = bt.load_entries(fake_json())
    rows = {r["title"]: r for r in bt.kernel_rows(entries)}
    w = rows["white fraction, 128 px tiles"]
    assert w["alt_name"] == "test_opencv" and w["alt"] == pytest.approx(20e-6)
    assert w["vs_alt"] == pytest.approx(10.0) and w["vs_baseline"] == pytest.approx(25_000)
    lab = rows["painted labels, 128 px tiles"]
    assert lab["vs_alt"] == pytest.approx(0.8) and lab["baseline"] is None
    inf = rows["inference, study CNN"]
    assert inf["alt_name"] == "test_engine[onnx]" and inf["vs_baseline"] == pytest.approx(10.0)
    ov = rows["overlay: blend + pyramidal TIFF"]
    assert ov["vs_alt"] == pytest.approx(5 / 4) and ov["baseline"] is None
    assert rows["read for training (ImageRecordIter), JPEG"]["vs_baseline"] == pytest.approx(1.0)
    e2e = rows["per slide: overlay (1000x500)"]
    assert e2e["baseline"] == pytest.approx(4.0 + 1.0)  # blend + montage
    assert e2e["vs_alt"] == pytest.approx(2.5 / 3.0)
    assert rows["per slide: pack (1000x500)"]["baseline"] == pytest.approx(10.0)
    assert "per slide: predict (1000x500)" in rows  # no alt measured: still listed
    pre = bt.preprocess(bt.e2e_stages(entries))
    got = [t["ok"] for t in bt.targets(list(rows.values()), pre)]
    assert got == [True, False, True, False]  # label slower than opencv; ratio 15.5 < 100
    assert [t["ok"] for t in bt.targets([], None)] == [None] * 4


def test_formatting(br) -> None:
    assert br.fmt_s(13500) == "3 h 45 min"
    assert br.fmt_s(720) == "12 min" and br.fmt_s(1020) == "17 min"
    assert br.fmt_s(45) == "45 s" and br.fmt_s(2.345) == "2.3 s" and br.fmt_s(0.25) == "250 ms"
    assert br.fmt_s(125) == "2 min 5 s" and br.fmt_s(None) == "—"
    assert br.fmt_x(1234.5) == "1,234x" and br.fmt_x(3.21) == "3.2x" and br.fmt_x(0.5) == "0.50x"
    assert br.fmt_cost(1 / 500, "tile") == "500.0 tiles/s"
    assert br.fmt_cost(2e-6, "tile") == "2.0 µs/tile (500,000/s)"


def test_main_writes_the_report_and_compares(br, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(br, "machine_facts", lambda: {"nproc": 2, "cpu": "test cpu"})
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(fake_json()))
    assert br.main(["--json", str(raw), "--out", str(tmp_path / "a")]) == 0
    md = (tmp_path / "a" / "bench-report.md").read_text()
    assert (
        "| stage | study (GTX 1080 workstation, 2018) | baseline here | ours here | speed-up |"
        in md
    )
    assert "| drop white tiles | 3 h 45 min | 50 s ‡ | 1.0 s" in md
    assert "random sample of 64-256 tiles" in md and "§ timed on a band" in md
    assert "400,000 tiles" in md and "FAIL: preprocessing" in md and "2 cores (test cpu)" in md
    old = json.loads((tmp_path / "a" / "bench-report.json").read_text())
    assert old["commit"] == "abc123" and old["preprocess"]["ratio"] > 15
    slower = fake_json()
    for b in slower["benchmarks"]:
        if b["extra_info"].get("stage") == "chain":
            b["extra_info"]["s_per_slide"] = 13.2
    raw.write_text(json.dumps(slower))
    old_path = tmp_path / "a" / "bench-report.json"
    assert (
        br.main(["--json", str(raw), "--out", str(tmp_path / "b"), "--compare", str(old_path)]) == 0
    )
    new = json.loads((tmp_path / "b" / "bench-report.json").read_text())
    assert new["compare"]["max_rel"] == pytest.approx(0.1)
    assert new["compare"]["worst"] == "table3.total.ours_s"
    assert "Largest difference: 10 %" in capsys.readouterr().out


def test_limits_against_peak_decode_and_engine(br, bt) -> None:
    data = fake_json()
    data["benchmarks"] += [
        _bench("bench_predict", "test_peak_matmul[numpy]", 0.1, {"gflops": 100.0}),
        _bench("bench_predict", "test_peak_matmul[onnxruntime]", 0.1, {"gflops": 200.0}),
        _bench("bench_predict", "test_onnx_precision[fp32]", 0.5, {"gflops": 150.0}),
        _bench("bench_limits", "test_decode_only", 1.0, {"limit": "decode", "s_per_slide": 3.5}),
        _bench(
            "bench_limits",
            "test_predict_vs_engine[int8]",
            2.0,
            {"limit": "predict-int8", "inference_s": 2.4, "engine_s": 2.0, "ratio": 1.2},
        ),
        _bench(
            "bench_train",
            "test_training_vs_limit[study]",
            3.0,
            {"limit_sps": 100.0, "real_sps": 85.0, "ratio": 0.86},
        ),
    ]
    rows = {r["what"]: r for r in bt.limits(bt.load_entries(data))}
    t = rows["training samples/s vs the same step on decoded batches, training_vs_limit[study]"]
    assert t["ratio"] == 0.86 and t["ok"] is True  # at least 0.8 of the limit
    g = rows["inference GFLOP/s, onnx_precision[fp32]"]
    assert g["limit"] == 200.0 and g["ratio"] == pytest.approx(0.75) and g["ok"] is None
    pre = rows["preprocessing vs only decoding its tiles"]  # ours preprocess: 4.0 s
    assert pre["ratio"] == pytest.approx(4.0 / 3.5) and pre["ok"] is True
    eng = rows["predict vs engine's pure batch time, int8"]
    assert eng["ratio"] == 1.2 and eng["ok"] is False
    text = br.render(br.build_report(data, {}))
    assert "## Against the limit" in text and "| 1.20x | <= 1.1x FAIL |" in text
    assert "| 85.0 samples/s | 100.0 samples/s | 0.86x | >= 0.8x PASS |" in text


def test_issue18_rows_int8_and_overlay(bt) -> None:
    data = fake_json()  # overlay: ours 4.0 s, pyvips 5.0 s
    fp32 = {"tiles_per_s": 400.0}
    data["benchmarks"] += [
        _bench("bench_predict", "test_onnx_precision[fp32]", 0.5, fp32),
        _bench(
            "bench_predict",
            "test_onnx_precision[int8]",
            0.25,
            {"tiles_per_s": 800.0, "decisions_unchanged": 0.985},
        ),
    ]
    rows = {r["what"][:20]: r for r in bt.limits(bt.load_entries(data))}
    q = rows["int8 vs fp32 tiles/s"]
    assert q["ratio"] == pytest.approx(2.0) and q["ok"] is False  # fast, but 1.5 % changed
    assert "98.5% of decisions unchanged" in q["what"]
    ov = rows["overlay vs pyvips, s"]
    assert ov["ratio"] == pytest.approx(5.0 / 4.0) and ov["ok"] is False and ov["at_least"]
    data["benchmarks"][-1]["extra_info"]["decisions_unchanged"] = 0.995
    rows = {r["what"][:20]: r for r in bt.limits(bt.load_entries(data))}
    assert rows["int8 vs fp32 tiles/s"]["ok"] is True
