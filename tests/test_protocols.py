"""The paper's protocols (eval.protocols): expansion into runs, table assembly from results files, one real run.

Expansion and assembly never train: the results files are written by hand in the format ``training/train.py``
writes (``results.json`` with a ``splits`` list and ``schema_version``). Two tests run a protocol through the real
training loop (Table 4's three trained GLIA variants; one Table 3 fraction) on a tiny generated CSV data set with the
tiny ViT of conftest.py, 1 split, 1 epoch.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from eval import protocol_tables, protocols, reporting
from eval.protocols import ProtocolError, expand
from tests.conftest import tiny_vit_config


def tiny_backbone() -> dict:
    vit = tiny_vit_config()
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")
    return {key: getattr(vit, key) for key in keys}


def write_base(path: Path, data: dict, backbone=None, **sections) -> Path:
    values = {
        "data": {"num_splits": 3, **data},
        "model": {"backbone": backbone if backbone is not None else tiny_backbone(),
                  "glia": {"latent_dim": 16, "cross_attention_heads": 2}},
        "optim": {"epochs": 1, "batch_size": 4},
        "eval": {"num_views": 1, "batch_size": 4},
        "output": {"plots": False, "log_every": 1},
    }
    for section, content in sections.items():
        values.setdefault(section, {}).update(content)
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def builtin_base(tmp_path):
    return write_base(tmp_path / "builtin.yaml", {"dataset": "builtin"})


def overrides_of(plan):
    return {run.run_id: run.cell.overrides for run in plan.runs}


# ------------------------------------------------------------------------------------------------ expansion


def test_every_protocol_expands_into_the_expected_runs(tmp_path, builtin_base):
    out = tmp_path / "out"
    expected_rows = {
        "intra": [("glia",)],
        "data_efficient": [(0.2, "glia"), (0.4, "glia"), (0.6, "glia")],
        "ablation_components": [(False, True), (True, True), (False, False)],  # (GLR, LGF); GLR-only not trained
        "ablation_streams": [("semantic", "semantic"), ("detail", "detail"), ("semantic", "detail"),
                             ("detail", "semantic")],
        # The paper's Table 6 rows in its order, then our additions (BitFit, registered in glia_hf/methods/bitfit.py).
        "methods": [(m,) for m in ("linear_probe", "full_finetune", "adapter", "lora", "vpt", "glia", "bitfit")],
        "cross": [("glia",), ("glia",)],
    }
    for table, rows in expected_rows.items():
        plan = expand(table, [builtin_base], splits=[0, 1, 2], out=out)
        assert [cell.row for cell in plan.cells] == rows, table
        assert len(plan.runs) == 3 * len(rows)
        assert [run.split for run in plan.runs] == [0, 1, 2] * len(rows)
        for run in plan.runs:
            assert run.config["data"]["splits"] == [run.split]
            assert run.run_dir == out / "runs" / run.run_id
            assert run.config["output"]["dir"] == str(run.run_dir)
            assert run.config["output"]["save_model"] is False
            assert run.run_id.split("-")[-2] == f"s{run.split}"
        assert len({run.run_id for run in plan.runs}) == len(plan.runs)

    components = expand("ablation_components", [builtin_base], splits=[0], out=out)
    assert [(r.name, r.config["model"]["glia"].get("use_lgf"), r.config["model"]["glia"].get("use_glr"))
            for r in components.runs] == [
        ("builtin-glia-lgf1-glr0-s0", True, False), ("builtin-glia-s0", True, True),
        ("builtin-glia-lgf0-glr0-s0", False, False)]
    streams = expand("ablation_streams", [builtin_base], splits=[0], out=out)
    assert [(r.config["model"]["glia"]["guidance_stream"], r.config["model"]["glia"]["main_stream"])
            for r in streams.runs] == list(protocol_tables.STREAM_ROWS)
    efficient = expand("data_efficient", [builtin_base], splits=[0], out=out)
    assert [r.config["data"]["train_fraction"] for r in efficient.runs] == [0.2, 0.4, 0.6]
    assert [r.name for r in efficient.runs] == ["builtin-glia-frac0.2-s0", "builtin-glia-frac0.4-s0",
                                                "builtin-glia-frac0.6-s0"]
    methods = expand("methods", [builtin_base], splits=[0], out=out)
    assert [r.config["model"]["method"] for r in methods.runs] == list(protocol_tables.default_methods())
    # Every run of a data set reads the same splits file.
    files = {r.config["data"]["splits_file"] for p in (components, streams, efficient, methods) for r in p.runs}
    assert len(files) == 1 and files.pop().startswith(str(out / "splits"))


def test_the_default_glia_run_is_shared_between_tables(tmp_path, builtin_base):
    ids = {
        table: {r.run_id for r in expand(table, [builtin_base], splits=[0], out=tmp_path).runs}
        for table in ("intra", "ablation_components", "ablation_streams", "methods")
    }
    shared = set.intersection(*ids.values())
    assert len(shared) == 1 and next(iter(shared)).startswith("builtin-glia-s0-")
    # A changed recipe is a different run.
    longer = expand("intra", [builtin_base], splits=[0], out=tmp_path, overrides=["--optim.epochs", "2"])
    assert longer.runs[0].run_id not in shared and longer.runs[0].config["optim"]["epochs"] == 2


def test_cross_with_one_builtin_config_uses_two_disjoint_parts(tmp_path, builtin_base):
    plan = expand("cross", [builtin_base], splits=[0, 1], out=tmp_path)
    assert [cell.column for cell in plan.cells] == [("builtin:structural", "builtin:photometric"),
                                                    ("builtin:photometric", "builtin:structural")]
    first = plan.runs[0].config["data"]
    train, test = first["dataset_options"], first["test_dataset_options"]
    assert first["dataset"] == first["test_dataset"] == "builtin"
    assert not set(train["scenes"]) & set(test["scenes"])
    assert not set(train["distortions"]) & set(test["distortions"])
    assert set(train["distortions"]) | set(test["distortions"]) == set(protocol_tables.STRUCTURAL_DISTORTIONS) | set(
        protocol_tables.PHOTOMETRIC_DISTORTIONS)
    second = plan.runs[2].config["data"]
    assert second["dataset_options"] == test and second["test_dataset_options"] == train
    assert first["splits_file"] != second["splits_file"]  # two data sets, two splits files
    assert "disjoint scenes" in plan.notes[0]


def test_cross_with_several_configs_uses_every_ordered_pair(tmp_path):
    a = write_base(tmp_path / "a.yaml", {"dataset": "csv", "data_dir": "/data/a/labels.csv",
                                         "dataset_options": {"name": "setA"}})
    b = write_base(tmp_path / "b.yaml", {"dataset": "koniq10k", "data_dir": "/data/koniq"})
    plan = expand("cross", [a, b], splits=[0], out=tmp_path)
    assert [cell.column for cell in plan.cells] == [("setA", "koniq10k"), ("koniq10k", "setA")]
    data = plan.runs[0].config["data"]
    assert (data["dataset"], data["test_dataset"], data["test_data_dir"]) == ("csv", "koniq10k", "/data/koniq")
    assert plan.runs[1].config["data"]["test_dataset_options"] == {"name": "setA"}
    with pytest.raises(ProtocolError, match="two or more"):
        expand("cross", [b], splits=[0], out=tmp_path)


def test_intra_takes_one_column_per_base_config(tmp_path, builtin_base):
    other = write_base(tmp_path / "k.yaml", {"dataset": "koniq10k", "data_dir": "/data/koniq"})
    plan = expand("intra", [builtin_base, other], splits=[0, 1], out=tmp_path)
    assert [cell.column for cell in plan.cells] == ["builtin", "koniq10k"]
    assert len(plan.runs) == 4


def test_bad_requests_are_refused(tmp_path, builtin_base):
    with pytest.raises(ProtocolError, match="model.method"):
        expand("methods", [builtin_base], splits=[0], out=tmp_path, overrides=["--model.method", "lora"])
    with pytest.raises(ProtocolError, match="use_glr"):
        expand("ablation_components", [builtin_base], out=tmp_path, overrides=["--model.glia.use_glr", "false"])
    with pytest.raises(ProtocolError, match="data.splits"):
        expand("intra", [builtin_base], out=tmp_path, overrides=["--data.splits", "[0]"])
    with pytest.raises(ProtocolError, match="out of range"):
        expand("intra", [builtin_base], splits=[5], out=tmp_path)
    with pytest.raises(ProtocolError, match="Unknown config key"):
        expand("intra", [builtin_base], out=tmp_path, overrides=["--optim.epoch", "2"])
    with pytest.raises(ProtocolError, match="unknown protocol"):
        expand("table7", [builtin_base], out=tmp_path)
    # Ordinary recipe overrides go through to every run.
    plan = expand("intra", [builtin_base], splits=[0], out=tmp_path, overrides=["--optim.epochs", "3",
                                                                                "--output.save_model", "true"])
    assert plan.runs[0].config["optim"]["epochs"] == 3 and plan.runs[0].config["output"]["save_model"] is True


def test_dry_run_lists_runs_without_training(tmp_path, builtin_base, capsys):
    code = protocols.main(["ablation_streams", "--base-config", str(builtin_base), "--splits", "0", "1",
                           "--out", str(tmp_path / "out"), "--dry-run", "--optim.lr", "1e-4"])
    assert code == 0
    text = capsys.readouterr().out
    assert "4 cells x 2 splits = 8 runs" in text and text.count("[to run]") == 8
    assert not (tmp_path / "out" / "runs").exists()


# ------------------------------------------------------------------------------------------------ table assembly


def test_base_config_flag_may_be_repeated(tmp_path, builtin_base, capsys):
    other = write_base(tmp_path / "k.yaml", {"dataset": "koniq10k", "data_dir": "/data/koniq"})
    for flags in (["--base-config", str(builtin_base), str(other)],
                  ["--base-config", str(builtin_base), "--base-config", str(other)]):  # as the README writes it
        assert protocols.main(["intra", *flags, "--splits", "0", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
        assert "2 cells x 1 splits = 2 runs" in capsys.readouterr().out


def test_dry_run_of_table4_lists_three_runs(tmp_path, builtin_base, capsys):
    code = protocols.main(["ablation_components", "--base-config", str(builtin_base), "--splits", "0",
                           "--out", str(tmp_path / "out"), "--dry-run"])
    assert code == 0
    text = capsys.readouterr().out
    assert "3 cells x 1 splits = 3 runs (3 distinct)" in text and text.count("[to run]") == 3
    assert "glr1-lgf0" not in text and "lgf0-glr1" not in text  # GLR on, LGF off is not trained


def fake_results(plan, score, trainable=None, schema=reporting.RESULTS_SCHEMA_VERSION):
    """Write a results.json like the training loop's into every run directory of a plan."""
    for run in plan.runs:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        srcc, plcc = score(run)
        entry = {"split": run.split, "srcc": srcc, "plcc": plcc, "krcc": 0.5, "rmse": 0.3,
                 "trainable_parameters": (trainable or {}).get(run.config["model"]["method"], 1000)}
        if run.cell.result_part == "cross":
            entry["cross"] = {"builtin": {"srcc": srcc - 0.2, "plcc": plcc - 0.2}}
        payload = {"method": run.config["model"]["method"], "splits": [entry],
                   "trainable_parameters": entry["trainable_parameters"]}
        if schema is not None:
            payload["schema_version"] = schema
        (run.run_dir / "results.json").write_text(json.dumps(payload))


def table_lines(plan):
    md_path, csv_path = protocols.write_outputs(plan)
    markdown = md_path.read_text()
    rows = list(csv.reader(csv_path.open()))
    return markdown, rows


def test_tables_follow_the_paper_layout(tmp_path, builtin_base):
    out = tmp_path / "out"

    plan = expand("ablation_components", [builtin_base], splits=[0, 1, 2], out=out)
    # row = (GLR, LGF); PLCC 0.6 everywhere, SRCC differs per row and split
    fake_results(plan, lambda run: (0.1 * run.split + 0.2 * run.cell.row[0] + 0.5 * run.cell.row[1], 0.6))
    markdown, rows = table_lines(plan)
    # The paper's layout: GLR, LGF; PLCC before SRCC; its three rows in its order, then our all-off row.
    assert rows[0] == ["GLR", "LGF", "builtin PLCC", "builtin PLCC mean", "builtin PLCC std", "builtin SRCC",
                       "builtin SRCC mean", "builtin SRCC std"]
    assert [r[:2] for r in rows[1:]] == [["✓", "✗"], ["✗", "✓"], ["✓", "✓"], ["✗", "✗ (our addition)"]]
    assert rows[1][2:] == [protocol_tables.SAME_AS_NO_INTERACTION, "", ""] * 2  # printed, not trained
    assert float(rows[3][5]) == pytest.approx(0.8)  # both modules: median SRCC of 0.7, 0.8, 0.9
    assert float(rows[4][5]) == pytest.approx(0.1) and float(rows[4][2]) == pytest.approx(0.6)
    assert "| ✓ | ✗ | = no interaction (see note) |" in markdown
    assert protocol_tables.COMPONENTS_NOTE in markdown and "our addition" in protocol_tables.COMPONENTS_NOTE
    assert markdown.startswith("**Table 4.**")
    assert "over 3 splits" in markdown and "backbone: randomly initialised ViT (hidden 32, 2 blocks" in markdown
    assert "[randomly initialised backbone, pseudo-MOS]" in markdown
    assert "Recipe: 1 epoch(s), batch 4, lr 0.0003, 1 test view(s) per image." in markdown
    assert (out / "table4_ablation_components.md").is_file()
    assert (out / "table4_ablation_components.runs.json").is_file()

    plan = expand("methods", [builtin_base], splits=[0, 1, 2], out=out)
    params = {"linear_probe": 33, "full_finetune": 27_000, "adapter": 1_500, "lora": 900, "vpt": 700,
              "glia": 5_000_000, "bitfit": 1_200}
    fake_results(plan, lambda run: (0.7, 0.75), trainable=params)
    markdown, rows = table_lines(plan)
    assert rows[0][:3] == ["Method", "Trainable params", "builtin SRCC"]
    assert [(r[0], int(r[1])) for r in rows[1:-1]] == [
        ("Linear probe", 33), ("Full fine-tune", 27_000), ("Adapter", 1_500), ("LoRA", 900), ("VPT", 700),
        ("GLIA (ours)", 5_000_000), ("BitFit (our addition)", 1_200)]
    assert "| GLIA (ours) | 5.00M | 0.700 (0.700 ± 0.000) |" in markdown
    # LoDa's row is quoted, marked as such; the paper has no number for the built-in set.
    assert rows[-1][:2] == [protocol_tables.LODA_ROW_LABEL, "9M (quoted)"] and set(rows[-1][2:]) == {""}
    assert protocol_tables.METHODS_NOTE in markdown and "detail stream" in markdown and "Sample" in markdown

    plan = expand("data_efficient", [builtin_base], splits=[0, 1], out=out)
    fake_results(plan, lambda run: (run.cell.row[0], 0.5))
    markdown, rows = table_lines(plan)
    assert [r[:3] for r in rows[1:]] == [["20%", "GLIA (ours)", "0.2"], ["40%", "GLIA (ours)", "0.4"],
                                         ["60%", "GLIA (ours)", "0.6"]]
    assert "over 2 splits" in markdown and "share of all images of the data set" in markdown
    assert reporting.FIT_NOTE in markdown  # PLCC is the fitted one, and the caption says so
    of_split = expand("data_efficient", [builtin_base], splits=[0], out=out,
                      overrides=["--data.train_fraction_of", "train_split"])
    assert [r.name for r in of_split.runs] == ["builtin-glia-frac0.2-of-train-s0", "builtin-glia-frac0.4-of-train-s0",
                                               "builtin-glia-frac0.6-of-train-s0"]
    assert "share of each split's training part (80% of the data set" in protocols.build_table(of_split).caption

    plan = expand("ablation_streams", [builtin_base], splits=[0], out=out)
    fake_results(plan, lambda run: (0.5, 0.5))
    markdown, rows = table_lines(plan)
    assert [r[:2] for r in rows[1:]] == [list(pair) for pair in protocol_tables.STREAM_ROWS]
    assert "over 1 split " in markdown

    plan = expand("cross", [builtin_base], splits=[0, 1, 2], out=out)
    fake_results(plan, lambda run: (0.9, 0.9))
    markdown, rows = table_lines(plan)
    assert rows[0] == ["Method", "builtin:structural → builtin:photometric SRCC",
                       "builtin:structural → builtin:photometric SRCC mean",
                       "builtin:structural → builtin:photometric SRCC std",
                       "builtin:photometric → builtin:structural SRCC",
                       "builtin:photometric → builtin:structural SRCC mean",
                       "builtin:photometric → builtin:structural SRCC std"]
    assert float(rows[1][1]) == pytest.approx(0.7)  # the cross-data-set number, not the split's own test part
    assert "disjoint distortion families" in markdown and "pseudo-MOS" in markdown


def test_missing_runs_are_blank_and_labels_follow_the_config(tmp_path):
    real = write_base(tmp_path / "k.yaml", {"dataset": "koniq10k", "data_dir": "/data/koniq"},
                      backbone="google/vit-base-patch16-224")
    plan = expand("intra", [real], splits=[0, 1, 2], out=tmp_path / "out")
    fake_results(plan, lambda run: (0.9, 0.92))
    (plan.runs[2].run_dir / "results.json").unlink()
    markdown, rows = table_lines(plan)
    assert "over 2 splits" in markdown and "backbone: google/vit-base-patch16-224" in markdown
    assert "pseudo-MOS" not in markdown and "randomly initialised" not in markdown
    plan = expand("intra", [real], splits=[7], out=tmp_path / "out2", overrides=["--data.num_splits", "10"])
    markdown, rows = table_lines(plan)
    assert rows[1][1] == "" and "no splits" in markdown


# ------------------------------------------------------------------------------------------------ a real protocol


@pytest.fixture
def tiny_csv(tmp_path):
    """16 images (4 scenes x 4 blur levels) whose score falls with the blur."""
    root = tmp_path / "tiny_iqa"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for scene in range(4):
        base = Image.fromarray(rng.integers(0, 256, (224, 232, 3), dtype=np.uint8))
        for level in range(4):
            image = base.resize((232 // (level + 1), 224 // (level + 1))).resize((232, 224))
            name = f"s{scene}_l{level}.png"
            image.save(root / name)
            rows.append((name, 5.0 - level + float(rng.normal(0, 0.1)), f"s{scene}"))
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mos", "ref"])
        writer.writerows(rows)
    return root / "labels.csv"


def test_ablation_protocol_end_to_end(tmp_path, tiny_csv, capsys):
    base = write_base(tmp_path / "tiny.yaml", {"dataset": "csv", "data_dir": str(tiny_csv)},
                      output={"plots": False, "log_every": 1, "save_state_every_epoch": False})
    out = tmp_path / "protocols"
    argv = ["ablation_components", "--base-config", str(base), "--splits", "0", "--out", str(out)]
    assert protocols.main(argv) == 0
    text = capsys.readouterr().out
    assert text.count(": done") == 3
    results = sorted(out.glob("runs/*/results.json"))
    assert len(results) == 3
    assert all((path.parent / protocols.RUN_RECORD).is_file() for path in results)
    for path in results:  # the training loop writes the current schema and every result key
        payload = json.loads(path.read_text())
        assert payload["schema_version"] == reporting.RESULTS_SCHEMA_VERSION
        assert set(payload["splits"][0]) >= {"srcc", "plcc", "plcc_raw", "krcc", "rmse", "rmse_raw"}
    rows = list(csv.reader((out / "table4_ablation_components.csv").open()))
    assert [r[:2] for r in rows[1:]] == [["✓", "✗"], ["✗", "✓"], ["✓", "✓"], ["✗", "✗ (our addition)"]]
    # Trained rows have results (PLCC is NaN here: 3 test images are too few for the 4-parameter fit).
    assert all(r[5] not in ("", "nan", protocol_tables.SAME_AS_NO_INTERACTION) for r in rows[2:])
    markdown = (out / "table4_ablation_components.md").read_text()
    assert "over 1 split" in markdown and "[randomly initialised backbone]" in markdown

    # Running it again trains nothing: every run is found finished.
    assert protocols.main(argv) == 0
    assert capsys.readouterr().out.count(": cached") == 3


def test_data_efficient_run_trains_on_a_share_of_the_whole_data_set(tmp_path, tiny_csv):
    # 16 images split by image: 13 train / 3 test. 40% of the data set = 6 images (40% of the training part: 5).
    base = write_base(tmp_path / "tiny.yaml", {"dataset": "csv", "data_dir": str(tiny_csv)},
                      output={"plots": False, "log_every": 1, "save_state_every_epoch": False})
    out = tmp_path / "protocols"
    assert protocols.main(["data_efficient", "--base-config", str(base), "--splits", "0", "--out", str(out),
                           "--fractions", "0.4"]) == 0
    (path,) = out.glob("runs/*/results.json")
    split = json.loads(path.read_text())["splits"][0]
    assert (split["num_train"], split["num_test"]) == (6, 3)


def test_a_base_splits_file_is_kept_only_for_its_own_data_set(tmp_path):
    base = write_base(tmp_path / "b.yaml", {"dataset": "builtin", "splits_file": "my/splits.json"})
    plan = expand("intra", [base], splits=[0], out=tmp_path)
    assert plan.runs[0].config["data"]["splits_file"] == "my/splits.json"
    plan = expand("intra", [base], splits=[0], out=tmp_path,
                  overrides=["--data.dataset_options", "{distortions: [jpeg]}"])
    assert plan.runs[0].config["data"]["splits_file"].startswith(str(tmp_path / "splits"))
    plan = expand("cross", [base], splits=[0], out=tmp_path)
    assert all(r.config["data"]["splits_file"] != "my/splits.json" for r in plan.runs)


def test_methods_table_counts_parameters_of_runs_not_yet_trained(tmp_path, builtin_base):
    plan = expand("methods", [builtin_base], splits=[0], out=tmp_path)
    markdown, rows = table_lines(plan)
    counts = {r[0]: int(r[1]) for r in rows[1:-1]}  # the last row is LoDa's, quoted
    assert counts["Full fine-tune"] > counts["GLIA (ours)"] > counts["LoRA"] > counts["Linear probe"] > 0
    assert all(r[2] == "" for r in rows[1:])  # no scores yet


def test_run_identity_ignores_run_control_and_new_null_fields(tmp_path, builtin_base):
    plain = expand("intra", [builtin_base], splits=[0], out=tmp_path).runs[0]
    workers = expand("intra", [builtin_base], splits=[0], out=tmp_path, overrides=["--data.num_workers", "3"]).runs[0]
    assert plain.run_id == workers.run_id

    from training.config import load_config

    config = load_config(builtin_base)

    class WithNewField:  # the same config after a schema change added an optional field, null by default
        def to_dict(self):
            values = config.to_dict()
            values["optim"]["some_new_option"] = None
            return values

    assert protocols.run_identity(WithNewField()) == protocols.run_identity(config)

    # An fp32 semantic cache computes what no cache does (same identity); bf16 tokens change the numbers (a new run).
    def run_id(*overrides):
        return expand("intra", [builtin_base], splits=[0], out=tmp_path, overrides=list(overrides)).runs[0].run_id

    assert run_id("--data.cache_semantic", "false") == plain.run_id
    assert run_id("--data.semantic_cache_dir", str(tmp_path / "tokens")) == plain.run_id
    assert run_id("--data.semantic_cache_dtype", "bf16") != plain.run_id


def test_finished_runs_from_before_the_schema_change_are_refused(tmp_path, builtin_base, capsys):
    out = tmp_path / "out"
    plan = expand("intra", [builtin_base], splits=[0, 1], out=out)
    fake_results(plan, lambda run: (0.9, 0.9), schema=None)  # a results file as written before schema_version
    assert [r.run_id for r in protocols.stale_runs(plan)] == [r.run_id for r in plan.runs]
    with pytest.raises(protocols.StaleResultsError, match=r"results schema 1, not 2 .* delete .* to train it again"):
        protocols.collect(plan)
    argv = ["intra", "--base-config", str(builtin_base), "--splits", "0", "1", "--out", str(out)]
    assert protocols.main([*argv, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("[stale results schema: delete to re-run]") == 2
    assert protocols.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and str(plan.runs[0].run_dir) in err
    with pytest.raises(protocols.StaleResultsError):
        protocols.execute_run(plan.runs[0])
    # Results of the current schema are used.
    fake_results(plan, lambda run: (0.9, 0.9))
    assert protocols.stale_runs(plan) == [] and len(protocols.collect(plan)[0]) == 2


def test_methods_table_quotes_lodas_row_for_kadid_and_koniq(tmp_path):
    kadid = write_base(tmp_path / "kadid.yaml", {"dataset": "kadid10k", "data_dir": "/data/kadid"})
    koniq = write_base(tmp_path / "koniq.yaml", {"dataset": "koniq10k", "data_dir": "/data/koniq"})
    plan = expand("methods", [kadid, koniq], splits=[0], out=tmp_path / "out", methods=["glia"])
    fake_results(plan, lambda run: (0.9, 0.92))
    table = protocols.build_table(plan)
    labels, values = table.rows[-1]
    assert labels == [protocol_tables.LODA_ROW_LABEL]
    assert table.columns == ["Trainable params", "kadid10k SRCC", "kadid10k PLCC", "koniq10k SRCC", "koniq10k PLCC"]
    assert values == ["9M (quoted)", 0.931, 0.936, 0.932, 0.944]  # paper Table 6
    assert "quoted from the paper's Table 6" in table.caption and "not run" in table.caption


def test_train_fraction_of_config_and_deprecated_logistic_flag():
    from training.config import ConfigError, config_from_dict

    assert config_from_dict({}).data.train_fraction_of == "dataset"
    with pytest.raises(ConfigError, match="data.train_fraction 0.9 of the whole data set is more than the training"):
        config_from_dict({"data": {"train_fraction": 0.9}})
    assert config_from_dict({"data": {"train_fraction": 0.9, "train_fraction_of": "train_split"}})
    with pytest.raises(ConfigError, match="data.train_fraction_of must be one of"):
        config_from_dict({"data": {"train_fraction_of": "all"}})
    # A saved config with the old eval.logistic key still parses, with a warning that it is ignored.
    with pytest.warns(FutureWarning, match="eval.logistic is deprecated and ignored"):
        config = config_from_dict({"eval": {"logistic": True}})
    assert config.eval.num_views == 15


def _fake_dataset(num_images, images_per_scene=None):
    import datasets

    refs = [f"scene{i // images_per_scene}" if images_per_scene else f"img{i}" for i in range(num_images)]
    return datasets.Dataset.from_dict({
        "image": [f"/data/set/img{i:03d}.png" for i in range(num_images)],
        "mos_original": [float(i % 7) for i in range(num_images)], "ref": refs,
        "dataset": ["live" if images_per_scene else "koniq10k"] * num_images,
    })


@pytest.mark.parametrize("images_per_scene", [None, 5])
def test_data_efficient_subsets_sizes_in_both_readings_and_nested(images_per_scene):
    from glia_hf.data.splits import make_splits, split_indices

    # 100 images by image (80 train / 20 test), or 20 scenes x 5 images by scene (16 / 4 scenes).
    dataset = _fake_dataset(100, images_per_scene)
    splits = make_splits(dataset, num_splits=3, train_fraction=0.8, fractions=(0.2, 0.4, 0.6))
    for k in range(3):
        train, test = set(split_indices(splits, k, "train")), set(split_indices(splits, k, "test"))
        assert (len(train), len(test)) == (80, 20) and not train & test
        of_dataset = [split_indices(splits, k, "train", f, of="dataset") for f in (0.2, 0.4, 0.6)]
        of_split = [split_indices(splits, k, "train", f, of="train_split") for f in (0.2, 0.4, 0.6)]
        assert [len(rows) for rows in of_dataset] == [20, 40, 60]  # 20/40/60% of all 100 images
        # 20/40/60% of the training part: 16/32/48 images, or of its 16 scenes 3/6/10 scenes (rounded half up)
        assert [len(rows) for rows in of_split] == ([16, 32, 48] if images_per_scene is None else [15, 30, 50])
        # Nested: every subset of either reading inside every larger one, all inside the training part.
        chain = sorted(of_dataset + of_split, key=len)
        for small, large in zip(chain, chain[1:]):
            assert set(small) <= set(large)
        assert set(chain[-1]) <= train
        if images_per_scene:  # whole scenes only
            scenes = {dataset[i]["ref"] for i in of_dataset[0]}
            assert len(scenes) == 4
    # The default of split_indices keeps its first meaning (share of the training part).
    assert split_indices(splits, 0, "train", 0.2) == split_indices(splits, 0, "train", 0.2, of="train_split")
    with pytest.raises(KeyError, match="no 0.3 subset of the data set"):
        split_indices(splits, 0, "train", 0.3, of="dataset")
    old = {**splits, "splits": [{k: v for k, v in s.items() if k != "train_subsets_of_dataset"}
                                for s in splits["splits"]]}
    with pytest.raises(KeyError, match="predates subsets counted in the whole data set: delete it"):
        split_indices(old, 0, "train", 0.2, of="dataset")


def test_streams_table_warns_when_the_two_streams_coincide(tmp_path):
    small = write_base(tmp_path / "s.yaml", {"dataset": "builtin", "dataset_options": {"size": 224}})
    assert "the same picture" in " ".join(expand("ablation_streams", [small], splits=[0], out=tmp_path).notes)
    large = write_base(tmp_path / "l.yaml", {"dataset": "builtin", "dataset_options": {"size": 384}})
    assert not expand("ablation_streams", [large], splits=[0], out=tmp_path).notes


# ------------------------------------------------------------------------------------------------ registry and identity


#: Run ids computed with eval/protocols.py before it became one Protocol object per table (commit 0afc7df), for the
#: builtin base config of these tests, split 0. A changed id would orphan every finished run on disk.
PINNED_RUN_IDS = {
    "intra": ["builtin-glia-s0-52341727"],
    "cross": ["builtin-structural-glia-to-builtin-photometric-s0-2f01ce9b",
              "builtin-photometric-glia-to-builtin-structural-s0-7d0aa7e7"],
    "data_efficient": ["builtin-glia-frac0.2-s0-65c0b22c", "builtin-glia-frac0.4-s0-960bd8a6",
                       "builtin-glia-frac0.6-s0-98d70e2b"],
    "ablation_components": ["builtin-glia-lgf1-glr0-s0-61930267", "builtin-glia-s0-52341727",
                            "builtin-glia-lgf0-glr0-s0-9d79fefd"],
    "ablation_streams": ["builtin-glia-guide-semantic-main-semantic-s0-a09e3902",
                         "builtin-glia-guide-detail-main-detail-s0-8342b7e1", "builtin-glia-s0-52341727",
                         "builtin-glia-guide-detail-main-semantic-s0-c8895ffb"],
    "methods": ["builtin-linear_probe-s0-6b26e560", "builtin-full_finetune-s0-dab4e217", "builtin-adapter-s0-af129568",
                "builtin-lora-s0-8421ef2a", "builtin-vpt-s0-54b783c4", "builtin-glia-s0-52341727"],
}


@pytest.mark.parametrize("table", sorted(PINNED_RUN_IDS))
def test_run_ids_of_finished_runs_do_not_change(tmp_path, builtin_base, table):
    plan = expand(table, [builtin_base], splits=[0], out=tmp_path / "out",
                  methods=list(protocol_tables.PAPER_METHOD_LABELS))
    assert [run.run_id for run in plan.unique_runs()] == PINNED_RUN_IDS[table]


def test_a_table_is_one_registration(tmp_path, builtin_base, monkeypatch, capsys):
    """A throw-away protocol registered here expands, refuses overrides of its keys, dry-runs and builds its table."""
    protocols.registered_protocols()  # the paper's six first, then keep the registry change inside this test
    monkeypatch.setattr(protocols, "_PROTOCOLS", dict(protocols._PROTOCOLS))

    def cells(bases, options):
        return [protocols.glia_cell(b, (depth,), b.source.label, glia_layers=[depth])
                for depth in (0, 1) for b in bases], ["Throw-away note."]

    def table(plan, results, context):
        nested = {f"GLIA block after layer {c.row[0]}": {c.column: results[i]} for i, c in enumerate(plan.cells)}
        return reporting.intra_dataset_table(nested, **context.layout())

    protocols.register_protocol(protocols.Protocol(
        name="depth_probe", file_stem="table9_depth", title="Table 9", build_cells=cells, build_table=table,
        defining_keys=("model.method", "model.glia.glia_layers"), note="Not in the paper.",
    ))
    with pytest.raises(ValueError, match="clashes"):
        protocols.register_protocol(protocols.Protocol(
            name="depth_probe", file_stem="other", title="Table 9", build_cells=cells, build_table=table))

    out = tmp_path / "out"
    assert protocols.main(["depth_probe", "--base-config", str(builtin_base), "--splits", "0", "--out", str(out),
                           "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "depth_probe: 2 cells x 1 splits = 2 runs (2 distinct)" in printed
    assert printed.count("[to run]") == 2 and '"model.glia.glia_layers": [1]' in printed
    with pytest.raises(ProtocolError, match="depth_probe"):
        expand("depth_probe", [builtin_base], out=out, overrides=["--model.glia.glia_layers", "[0]"])

    plan = expand("depth_probe", [builtin_base], splits=[0], out=out)
    fake_results(plan, lambda run: (0.5 + 0.1 * run.cell.row[0], 0.6))
    markdown, rows = table_lines(plan)
    assert (out / "table9_depth.md").is_file() and markdown.startswith("**Table 9.**")
    assert "Throw-away note." in markdown and markdown.rstrip().count("Not in the paper.") == 1
    assert [r[0] for r in rows[1:]] == ["GLIA block after layer 0", "GLIA block after layer 1"]
    assert [float(r[1]) for r in rows[1:]] == [pytest.approx(0.5), pytest.approx(0.6)]


def test_one_backbone_wording_and_one_results_label():
    from eval.reporting import describe_backbone
    from training.train import backbone_description

    text = describe_backbone(tiny_backbone())
    assert text.startswith("randomly initialised ViT (hidden 32, 2 blocks") and backbone_description(
        tiny_backbone()) == text
    assert describe_backbone("google/vit-base-patch16-224") == "google/vit-base-patch16-224"
    assert reporting.result_label(True, True) == "randomly initialised backbone, pseudo-MOS"
    assert reporting.result_label(False, True) == "pseudo-MOS" and reporting.result_label(False, False) is None
