"""Tests of per-split summaries, the paper's table layouts, and the scatter plot."""

import csv
import io
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from eval.plots import scatter_plot
from eval.reporting import (
    FIT_NOTE,
    METRIC_LABELS,
    SplitSummary,
    Table,
    ablation_table,
    cross_dataset_table,
    data_efficiency_table,
    describe_train_fraction,
    finetune_methods_table,
    format_param_count,
    intra_dataset_table,
    summarize_splits,
    to_csv,
    to_markdown,
    write_table,
)

LABEL = "randomly initialised backbone, pseudo-MOS"


def splits(srcc, plcc=None, n=10):
    """Per-split results whose medians are exactly ``srcc`` and ``plcc``."""
    plcc = srcc + 0.02 if plcc is None else plcc
    offsets = np.linspace(-0.01, 0.01, n)
    return [{"split": i, "srcc": srcc + o, "plcc": plcc + o} for i, o in enumerate(offsets)]


def read_csv(text):
    return list(csv.reader(io.StringIO(text)))


def md_rows(text):
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines() if line.startswith("|")
    ]


# ---------------------------------------------------------------- summaries


def test_summary_median_mean_std_count():
    res = [{"split": i, "srcc": v, "plcc": 1.0} for i, v in enumerate([0.5, 0.9, 0.7, 0.6])]
    s = summarize_splits(res)
    assert set(s) == {"srcc", "plcc"}
    assert s["srcc"].median == pytest.approx(0.65)
    assert s["srcc"].mean == pytest.approx(0.675)
    assert s["srcc"].std == pytest.approx(np.std([0.5, 0.9, 0.7, 0.6], ddof=1))
    assert s["srcc"].count == 4
    assert s["plcc"].as_dict() == {"median": 1.0, "mean": 1.0, "std": 0.0, "count": 4}


def test_summary_single_split_and_nan_propagate():
    one = summarize_splits([{"split": 0, "srcc": 0.8}])
    assert one["srcc"].median == 0.8 and math.isnan(one["srcc"].std)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = summarize_splits([{"srcc": 0.8}, {"srcc": float("nan")}, {"srcc": 0.7}])
    assert math.isnan(s["srcc"].median) and math.isnan(s["srcc"].mean)


def test_summary_errors():
    with pytest.raises(ValueError, match="no per-split results"):
        summarize_splits([])
    with pytest.raises(ValueError, match="'plcc' missing"):
        summarize_splits([{"srcc": 0.1, "plcc": 0.2}, {"srcc": 0.3}], metrics=["srcc", "plcc"])


# ---------------------------------------------------------------- Table 1


def test_table1_layout_markdown_and_csv(tmp_path):
    results = {
        "LoDa": {"KonIQ-10k": splits(0.932), "LIVEC": splits(0.876)},
        "GLIANet": {"KonIQ-10k": splits(0.941), "LIVEC": splits(0.889, 0.901)},
    }
    table = intra_dataset_table(results, backbone="ViT-B/16", label=LABEL)
    md = to_markdown(table)
    first = md.splitlines()[0]
    assert first.startswith("**Table 1.**")
    assert "10 splits" in first and "backbone: ViT-B/16" in first and LABEL in first
    rows = md_rows(md)
    assert rows[0] == ["Method", "KonIQ-10k SRCC", "KonIQ-10k PLCC", "LIVEC SRCC", "LIVEC PLCC"]
    assert rows[2][0] == "LoDa" and rows[3][0] == "GLIANet"
    assert rows[3][3].startswith("0.889 (0.889 ± 0.")
    assert rows[3][4].startswith("0.901 ")

    md_path, csv_path = write_table(table, tmp_path / "tables" / "table1")
    assert md_path.read_text(encoding="utf-8") == md
    grid = read_csv(csv_path.read_text(encoding="utf-8"))
    assert grid[0][:4] == ["Method", "KonIQ-10k SRCC", "KonIQ-10k SRCC mean", "KonIQ-10k SRCC std"]
    assert grid[2][0] == "GLIANet"
    assert float(grid[2][grid[0].index("LIVEC PLCC")]) == pytest.approx(0.901)
    assert len(grid) == 3


def test_table1_without_spread_and_missing_cell():
    results = {"A": {"KonIQ": splits(0.9)}, "B": {"LIVEC": splits(0.8)}}
    table = intra_dataset_table(results, backbone="tiny", spread=False, datasets=["LIVEC", "KonIQ"])
    rows = md_rows(to_markdown(table))
    assert rows[0] == ["Method", "LIVEC SRCC", "LIVEC PLCC", "KonIQ SRCC", "KonIQ PLCC"]
    assert rows[2] == ["A", "–", "–", "0.900", "0.920"]
    grid = read_csv(to_csv(table))
    assert grid[0] == ["Method", "LIVEC SRCC", "LIVEC PLCC", "KonIQ SRCC", "KonIQ PLCC"]
    assert grid[1][1] == "" and float(grid[1][3]) == pytest.approx(0.9)
    assert "(mean ± std" not in table.caption


def test_caption_requires_backbone_and_counts_uneven_splits():
    with pytest.raises(ValueError, match="backbone"):
        intra_dataset_table({"A": {"K": splits(0.9)}}, backbone="")
    table = intra_dataset_table({"A": {"K": splits(0.9, n=10)}, "B": {"K": splits(0.9, n=3)}},
                                backbone="tiny")
    assert "3-10 splits per cell" in table.caption


# ---------------------------------------------------------------- Tables 2-6


def test_table2_cross_dataset_layout():
    results = {
        "LoDa": {("KonIQ-10k", "LIVEC"): splits(0.811), ("LIVEC", "KonIQ-10k"): splits(0.763)},
        "GLIANet": {("KonIQ-10k", "LIVEC"): splits(0.823), ("LIVEC", "KonIQ-10k"): splits(0.771)},
    }
    table = cross_dataset_table(results, backbone="ViT-B/16", label=LABEL)
    md = to_markdown(table)
    assert md.startswith("**Table 2.**") and "Median SRCC over 10 splits" in md
    rows = md_rows(md)
    assert rows[0] == ["Method", "KonIQ-10k → LIVEC SRCC", "LIVEC → KonIQ-10k SRCC"]
    assert rows[3][0] == "GLIANet" and rows[3][2].startswith("0.771")


def test_table3_data_efficiency_layout():
    results = {
        0.2: {"LoDa": {"KonIQ-10k": splits(0.85)}, "GLIANet": {"KonIQ-10k": splits(0.87)}},
        40: {"GLIANet": {"KonIQ-10k": splits(0.90)}},
    }
    table = data_efficiency_table(results, backbone="ViT-B/16", spread=False)
    rows = md_rows(to_markdown(table))
    assert rows[0] == ["Training data", "Method", "KonIQ-10k SRCC", "KonIQ-10k PLCC"]
    assert rows[2] == ["20%", "LoDa", "0.850", "0.870"]
    assert rows[4] == ["40%", "GLIANet", "0.900", "0.920"]
    grid = read_csv(to_csv(table))
    assert grid[0][:2] == ["Training data", "Method"] and grid[1][:2] == ["20%", "LoDa"]


def test_table3_caption_says_what_the_percentages_are_of():
    results = {0.2: {"GLIANet": {"KonIQ-10k": splits(0.87)}}}
    of_dataset = data_efficiency_table(results, backbone="b")
    assert "share of all images of the data set" in of_dataset.caption
    assert "drawn from each split's training part" in of_dataset.caption
    of_split = data_efficiency_table(results, backbone="b", fraction_of="train_split", train_ratio=0.8)
    assert "share of each split's training part (80% of the data set, so 20% is 16% of all images)" in of_split.caption
    with pytest.raises(ValueError, match="fraction_of"):
        data_efficiency_table(results, backbone="b", fraction_of="everything")
    assert describe_train_fraction(0.4, "train_split", 0.8).startswith("40% of each split's training part (= 32%")
    assert describe_train_fraction(0.4, "dataset").startswith("40% of all images of the data set")


def test_metric_labels_and_the_fit_note_are_defined_once():
    from eval.metrics import RESULT_KEYS

    assert list(METRIC_LABELS) == list(RESULT_KEYS)
    assert METRIC_LABELS["plcc"] == "PLCC" and METRIC_LABELS["plcc_raw"] == "PLCC (raw)"
    assert METRIC_LABELS["rmse_raw"] == "RMSE (raw)"
    # Every caption that shows PLCC or RMSE says they are after the logistic fit; an SRCC-only one does not.
    cell = [{**r, "plcc_raw": r["plcc"] - 0.05} for r in splits(0.9)]
    with_plcc = intra_dataset_table({"A": {"K": cell}}, backbone="b", metrics=("srcc", "plcc", "plcc_raw"))
    assert FIT_NOTE in with_plcc.caption and "Median SRCC/PLCC/PLCC (raw)" in with_plcc.caption
    assert md_rows(to_markdown(with_plcc))[0] == ["Method", "K SRCC", "K PLCC", "K PLCC (raw)"]
    srcc_only = cross_dataset_table({"A": {("K", "L"): splits(0.8)}}, backbone="b")
    assert FIT_NOTE not in srcc_only.caption


def test_tables4_5_ablation_layouts():
    t4 = ablation_table(
        [({"LGF": False, "GLR": False}, {"KonIQ": splits(0.90)}),
         ({"LGF": True, "GLR": False}, {"KonIQ": splits(0.92)}),
         ({"LGF": True, "GLR": True}, {"KonIQ": splits(0.94)})],
        settings=("LGF", "GLR"), backbone="ViT-B/16", label=LABEL)
    rows = md_rows(to_markdown(t4))
    assert rows[0] == ["LGF", "GLR", "KonIQ SRCC", "KonIQ PLCC"]
    assert rows[2][:2] == ["✗", "✗"] and rows[4][:2] == ["✓", "✓"]
    assert rows[4][2].startswith("0.940")
    t5 = ablation_table(
        [({"Guidance": "x_s", "Main": "x_d"}, {"KonIQ": splits(0.94)}),
         ({"Guidance": "x_d", "Main": "x_s"}, {"KonIQ": splits(0.91)})],
        settings=("Guidance", "Main"), backbone="ViT-B/16", title="Table 5",
        description="Which stream guides which.")
    md5 = to_markdown(t5)
    assert md5.startswith("**Table 5.** Which stream guides which.")
    assert md_rows(md5)[2][:2] == ["x_s", "x_d"]
    with pytest.raises(ValueError, match="lacks setting"):
        ablation_table([({"LGF": True}, {"K": splits(0.9)})], settings=("LGF", "GLR"), backbone="b")


def test_table6_parameter_counts():
    results = {"Linear probe": {"KonIQ-10k": splits(0.80)}, "GLIANet": {"KonIQ-10k": splits(0.94)}}
    table = finetune_methods_table(results, params={"Linear probe": 769, "GLIANet": 8_031_234},
                                   backbone="ViT-B/16", spread=False)
    rows = md_rows(to_markdown(table))
    assert rows[0] == ["Method", "Trainable params", "KonIQ-10k SRCC", "KonIQ-10k PLCC"]
    assert rows[2][:2] == ["Linear probe", "769"] and rows[3][:3] == ["GLIANet", "8.03M", "0.940"]
    grid = read_csv(to_csv(table))
    assert grid[2][:2] == ["GLIANet", "8031234"]
    with pytest.raises(ValueError, match="no trainable parameter count"):
        finetune_methods_table(results, params={"GLIANet": 1}, backbone="b")
    assert format_param_count(294_912) == "295K" and format_param_count(86_000_000) == "86.00M"


def test_generic_table_checks_row_shape():
    t = Table(title="T", caption="c", row_headers=["Method"], columns=["X"])
    t.add_row(["m"], [SplitSummary(0.5, 0.5, 0.0, 1)])
    with pytest.raises(ValueError, match="row has"):
        t.add_row(["m", "extra"], [0.1])
    assert md_rows(to_markdown(t))[2] == ["m", "0.500"]
    piped = Table("T", "a|b", ["M"], ["X"])
    piped.add_row(["x|y"], [None])
    assert "a\\|b" in to_markdown(piped) and "x\\|y" in to_markdown(piped)


# ---------------------------------------------------------------- scatter plot


def test_scatter_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 1, 150)
    mos = 20 + 60 * pred ** 2 + rng.normal(0, 4, 150)
    path = scatter_plot(pred, mos, tmp_path / "run" / "scatter.png", title="GLIANet, split 0")
    assert path.is_file()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] >= 300 and img.size[1] >= 300
        arr = np.asarray(img.convert("L"))
    assert arr.std() > 5  # not a blank image


def test_scatter_plot_with_given_and_degenerate_metrics(tmp_path):
    path = scatter_plot([0.1, 0.2, 0.3], [1.0, 3.0, 2.0], tmp_path / "a.png",
                        metrics={"srcc": 0.5, "plcc": 0.6, "rmse": 1.2})
    with Image.open(path) as img:
        assert img.size == (500, 500)
    with pytest.warns(RuntimeWarning, match="constant"):
        scatter_plot([0.5] * 4, [1.0, 2.0, 3.0, 4.0], tmp_path / "b.png")
    with pytest.raises(ValueError, match="differ in length"):
        scatter_plot([0.1, 0.2], [1.0], tmp_path / "c.png")
