"""Tests of gMAD pair selection, the contact sheet and the command line (with fake scorers)."""

import json

import numpy as np
import pytest
from PIL import Image

from eval import gmad
from eval.gmad import gmad_contact_sheet, list_images, run_gmad, select_gmad_pairs
from tests.conftest import BATCH_ATOL


def test_selection_picks_the_expected_pair():
    # Model A sees images 0-3 as equally poor and 6-9 as equally good; model B disagrees most
    # strongly within each group on (2, 1) and (8, 7).
    a = np.array([0.10, 0.10, 0.11, 0.10, 0.50, 0.55, 0.90, 0.90, 0.91, 0.90])
    b = np.array([0.30, 0.05, 0.95, 0.40, 0.50, 0.20, 0.60, 0.10, 0.99, 0.50])
    with pytest.warns(UserWarning, match=r"B defending at level q=0\.[19] has 1 image"):
        pairs = select_gmad_pairs(a, b, levels=(0.1, 0.9), tolerance=0.03)
    a_def = [p for p in pairs if p.defender == "A"]
    assert [(p.level, p.better, p.worse) for p in a_def] == [(0.1, 2, 1), (0.9, 8, 7)]
    low = a_def[0]
    assert low.attacker == "B" and low.n_candidates == 4
    assert low.scores_b == (0.95, 0.05) and low.scores_a == (0.11, 0.10)
    assert low.attacker_gap == pytest.approx(0.90)
    assert low.attacker_gap_relative == pytest.approx(0.90 / (0.99 - 0.05))
    assert low.defender_gap == pytest.approx(0.01)
    assert low.band[0] <= 0.10 <= low.band[1]
    # With so narrow a band B (whose scores are spread out) has no pair: a warning, not a guess.
    assert [p for p in pairs if p.defender == "B"] == []
    # A wider band gives the reverse role: B sees images 1 and 7 alike (0.05, 0.10); A does not.
    pairs = select_gmad_pairs(a, b, levels=(0.1,), tolerance=0.1)
    b_def = [p for p in pairs if p.defender == "B"]
    assert [(p.attacker, p.better, p.worse) for p in b_def] == [("A", 7, 1)]
    assert b_def[0].scores_a == (0.90, 0.10) and b_def[0].scores_b == (0.10, 0.05)


def test_selection_levels_as_count_and_names():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=200), rng.uniform(size=200)
    pairs = select_gmad_pairs(a, b, levels=4, tolerance=0.05, names=("GLIANet", "LoDa"))
    assert [p.level for p in pairs] == [0.125, 0.375, 0.625, 0.875] * 2
    assert {p.defender for p in pairs} == {"GLIANet", "LoDa"}
    for p in pairs:
        defender = a if p.defender == "GLIANet" else b
        assert abs(defender[p.better] - defender[p.worse]) <= 0.1 * np.ptp(defender) + 1e-12


def test_selection_skips_empty_levels_with_warning_and_validates():
    a = np.array([0.0, 0.5, 1.0])
    b = np.array([0.2, 0.3, 0.1])
    with pytest.warns(UserWarning, match="no pair"):
        assert select_gmad_pairs(a, b, levels=(0.5,), tolerance=0.01) == []
    with pytest.raises(ValueError, match="differ in length"):
        select_gmad_pairs([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        select_gmad_pairs([0.1, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="quantiles must lie in"):
        select_gmad_pairs([0.1, 0.2], [0.1, 0.2], levels=(1.5,))
    with pytest.raises(ValueError, match="at least 2 images"):
        select_gmad_pairs([0.1], [0.1])


def _make_pool(folder, n=12):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = np.clip(rng.normal(40 + 15 * i, 30, (48 + 4 * i, 64, 3)), 0, 255).astype("uint8")
        p = folder / f"img{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    (folder / "notes.txt").write_text("not an image")
    return paths


def test_contact_sheet_png(tmp_path):
    paths = _make_pool(tmp_path / "pool")
    a = np.linspace(0, 1, len(paths))
    b = np.cos(5 * a)
    pairs = select_gmad_pairs(a, b, tolerance=0.1)
    out = gmad_contact_sheet(pairs, paths, tmp_path / "sheet.png", names=("A", "B"), thumb_size=128)
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size[0] >= 250 and img.size[1] >= len(pairs) * 150
    with pytest.raises(ValueError, match="no gMAD pairs"):
        gmad_contact_sheet([], paths, tmp_path / "x.png")
    # an unreadable file is drawn as a placeholder, not a crash
    bad = tmp_path / "pool" / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    out2 = gmad_contact_sheet(pairs[:1], [bad] * len(paths), tmp_path / "sheet2.png", thumb_size=64)
    assert out2.is_file()


def test_run_gmad_and_cli_with_fake_scorers(tmp_path, monkeypatch, capsys):
    paths = _make_pool(tmp_path / "pool")
    assert list_images(tmp_path / "pool") == paths  # .txt ignored, sorted

    def score_a(ps):
        return np.array([int(p.stem[3:]) / 11.0 for p in ps])

    def score_b(ps):
        return np.array([np.sin(int(p.stem[3:])) for p in ps])

    pairs = run_gmad(paths, score_a, score_b, tmp_path / "out" / "sheet.png", tolerance=0.1)
    data = json.loads((tmp_path / "out" / "sheet.json").read_text())
    assert data["n_images"] == 12 and len(data["pairs"]) == len(pairs) == 4
    assert data["pairs"][0]["better_path"].endswith(paths[pairs[0].better].name)

    with pytest.raises(ValueError, match="returned 3 scores for 12 images"):
        run_gmad(paths, lambda ps: np.zeros(3), score_b, tmp_path / "x.png")

    # The command line, with load_scorer replaced by the fakes (no model needed).
    fakes = {"dirA": score_a, "dirB": score_b}
    monkeypatch.setattr(gmad, "load_scorer", lambda d, **kw: fakes[d])
    rc = gmad.main(["--model-a", "dirA", "--model-b", "dirB", "--images", str(tmp_path / "pool"),
                    "--out", str(tmp_path / "cli" / "sheet.png"), "--tolerance", "0.1",
                    "--names", "GLIANet", "LoDa"])
    assert rc == 0
    assert "4 gMAD pair(s) from 12 images" in capsys.readouterr().out
    with Image.open(tmp_path / "cli" / "sheet.png") as img:
        assert img.size[0] > 200
    cli_json = json.loads((tmp_path / "cli" / "sheet.json").read_text())
    assert cli_json["names"] == ["GLIANet", "LoDa"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert gmad.main(["--model-a", "dirA", "--model-b", "dirB", "--images", str(empty),
                      "--out", str(tmp_path / "e.png")]) == 2


def test_cli_with_real_tiny_glia_models(tmp_path, capsys):
    """End to end through load_scorer: two tiny random GLIA models saved to folders."""
    import torch

    from glia_hf import GLIAConfig, GLIAForImageQualityAssessment, GLIAImageProcessor
    from tests.conftest import tiny_vit_config

    for seed, name in [(0, "model_a"), (1, "model_b")]:
        torch.manual_seed(seed)
        model = GLIAForImageQualityAssessment(GLIAConfig(backbone_config=tiny_vit_config(), latent_dim=16))
        model.save_pretrained(tmp_path / name)
        GLIAImageProcessor().save_pretrained(tmp_path / name)
    _make_pool(tmp_path / "pool", n=5)
    score = gmad.load_scorer(tmp_path / "model_a", batch_size=2)
    paths = list_images(tmp_path / "pool")
    batched = score(paths)  # batches of 2, 2 and 1
    assert batched.shape == (5,) and np.all(np.isfinite(batched))
    np.testing.assert_allclose(batched[4:], score(paths[4:]), atol=BATCH_ATOL)
    with pytest.raises(ValueError, match="cannot read image .*notes.txt"):
        score([tmp_path / "pool" / "notes.txt"])

    rc = gmad.main(["--model-a", str(tmp_path / "model_a"), "--model-b", str(tmp_path / "model_b"),
                    "--images", str(tmp_path / "pool"), "--out", str(tmp_path / "sheet.png"),
                    "--tolerance", "0.5", "--batch-size", "8"])
    assert rc == 0
    with Image.open(tmp_path / "sheet.png") as img:
        assert img.size[0] > 200 and img.size[1] > 200
    assert json.loads((tmp_path / "sheet.json").read_text())["names"] == ["model_a", "model_b"]


def test_opponent_scores_from_a_csv(tmp_path, monkeypatch, capsys):
    """Any model can be the opponent: its scores as a CSV of (image, score), e.g. from a pyiqa run."""
    paths = _make_pool(tmp_path / "pool")

    def score_a(ps):
        return np.array([int(p.stem[3:]) / 11.0 for p in ps])

    b_scores = {p.name: float(np.sin(int(p.stem[3:]))) for p in paths}
    # A header with pyiqa-like column names, paths relative to the pool, one extra row for an image not in the pool.
    with_header = tmp_path / "deiqt_scores.csv"
    with_header.write_text("img_path,score\n" + "".join(f"{name},{b_scores[name]!r}\n" for name in sorted(b_scores))
                           + "elsewhere.png,0.5\n")
    np.testing.assert_allclose(gmad.csv_scorer(with_header, images_root=tmp_path / "pool")(paths),
                               [b_scores[p.name] for p in paths])
    # No header, absolute paths, another order: the same scores.
    bare = tmp_path / "bare.csv"
    bare.write_text("".join(f"{p},{b_scores[p.name]}\n" for p in reversed(paths)))
    np.testing.assert_allclose(gmad.csv_scorer(bare)(paths), [b_scores[p.name] for p in paths])

    # The CLI picks the CSV by its suffix; the default name is the file's stem. Pairs equal those of a scorer.
    monkeypatch.setattr(gmad, "load_scorer", lambda d, **kw: score_a)
    rc = gmad.main(["--model-a", "glia_dir", "--model-b", str(with_header), "--images", str(tmp_path / "pool"),
                    "--out", str(tmp_path / "cli" / "sheet.png"), "--tolerance", "0.1"])
    assert rc == 0 and "gMAD pair(s) from 12 images" in capsys.readouterr().out
    cli_json = json.loads((tmp_path / "cli" / "sheet.json").read_text())
    assert cli_json["names"] == ["glia_dir", "deiqt_scores"]
    direct = run_gmad(paths, score_a, lambda ps: np.array([b_scores[p.name] for p in ps]),
                      tmp_path / "direct.png", names=("glia_dir", "deiqt_scores"), tolerance=0.1)
    assert [(p["better"], p["worse"]) for p in cli_json["pairs"]] == [(p.better, p.worse) for p in direct]

    # A CSV that misses images, repeats one, or has no usable columns: one clear line, exit status 2.
    partial = tmp_path / "partial.csv"
    partial.write_text("image,score\nimg00.png,0.1\nimg01.png,0.2\n")
    assert gmad.main(["--model-a", "glia_dir", "--model-b", str(partial), "--images", str(tmp_path / "pool"),
                      "--out", str(tmp_path / "p.png")]) == 2
    assert "has no score for 10 of 12 images (first: " in capsys.readouterr().err
    twice = tmp_path / "twice.csv"
    twice.write_text("image,score\nimg00.png,0.1\nimg00.png,0.2\n")
    with pytest.raises(ValueError, match=r"rows 2 and 3: image 'img00.png' is listed twice"):
        gmad.read_score_csv(twice)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("picture,value\nimg00.png,0.1\n")
    with pytest.raises(ValueError, match="needs an image column"):
        gmad.read_score_csv(wrong)
    bad = tmp_path / "bad.csv"
    bad.write_text("image,score\nimg00.png,high\n")
    with pytest.raises(ValueError, match="row 2: score 'high' is not a number"):
        gmad.read_score_csv(bad)
