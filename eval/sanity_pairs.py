"""Held-out sanity check: does a trained model score a clean photograph above its strongly degraded versions?

    python -m eval.sanity_pairs --model outputs/quickstart/split-0/model
    python -m eval.sanity_pairs --model DIR --references photos/ --json pairs.json --min-share 0.8

For every clean reference photograph, six degraded versions are made with tools that are *not* the built-in data
set's own distortion code (``glia_hf.data.distortions``), so that the check does not reward a model for recognising
one implementation's artefacts:

===========  =====  ===================================================================
kind         level  how
===========  =====  ===================================================================
``jpeg``     4      Pillow's JPEG encoder, quality 10 (4:2:0 chroma subsampling)
``jpeg``     5      Pillow's JPEG encoder, quality 5
``blur``     4      ``PIL.ImageFilter.GaussianBlur``, radius 3
``blur``     5      ``PIL.ImageFilter.GaussianBlur``, radius 5
``noise``    4      additive Gaussian noise from numpy, sigma 25 (of 255), fixed seed
``noise``    5      additive Gaussian noise from numpy, sigma 40 (of 255), fixed seed
===========  =====  ===================================================================

The levels are named after the built-in set's levels 4 and 5 of the same kinds (JPEG quality 8 / 3, Gaussian sigma
3.2 / 5.0, noise sigma 27 / 40): strong degradations that any quality model should rank below the clean photograph.
A pair is *won* when the model's score of the clean image is strictly higher than that of the degraded one (a tie
is a loss). The result is the share of won pairs, overall and per kind and level.

By default the references are the clean photographs of the **held-out** (test-part) scenes of the split the model
was trained on: the model directory ``<run>/split-K/model`` leads to ``<run>/config.yaml``, whose data set must be
the built-in set and whose split file names the test scenes (``test_refs``); their clean references are the
built-in set's ``reference/<scene>.png``. ``--references DIR`` uses every image in a folder instead.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["DEGRADATIONS", "Pair", "degrade", "make_pairs", "pair_results", "model_scorer", "held_out_references",
           "main"]

#: (kind, level) -> the parameter of the degradation (JPEG quality, blur radius in px, noise sigma of 255).
DEGRADATIONS: Dict[tuple, float] = {
    ("jpeg", 4): 10,
    ("jpeg", 5): 5,
    ("blur", 4): 3.0,
    ("blur", 5): 5.0,
    ("noise", 4): 25.0,
    ("noise", 5): 40.0,
}
NOISE_SEED = 20240917


@dataclass
class Pair:
    """A clean photograph and one degraded version of it."""

    scene: str
    kind: str
    level: int
    clean: Image.Image
    degraded: Image.Image


def degrade(image: Image.Image, kind: str, level: int, seed: int = NOISE_SEED) -> Image.Image:
    """One degraded version of an RGB image, with Pillow or numpy (see the module docstring for the parameters)."""
    if (kind, level) not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r} at level {level}; known: {sorted(DEGRADATIONS)}")
    image = image.convert("RGB")
    parameter = DEGRADATIONS[(kind, level)]
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(parameter), subsampling=2)
        buffer.seek(0)
        return Image.open(buffer).convert("RGB")
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=parameter))
    # "noise": additive Gaussian noise with a fixed seed
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + rng.normal(0.0, parameter, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def make_pairs(references: Mapping[str, Image.Image]) -> List[Pair]:
    """Every (reference, degradation) pair of :data:`DEGRADATIONS`, in a fixed order."""
    pairs = []
    for scene, image in references.items():
        clean = image.convert("RGB")
        for kind, level in DEGRADATIONS:
            pairs.append(Pair(scene, kind, level, clean, degrade(clean, kind, level)))
    return pairs


def pair_results(score: Callable[[Sequence[Image.Image]], Sequence[float]], pairs: Sequence[Pair]) -> dict:
    """Score every image of ``pairs`` (each clean image once) and count the pairs where clean scores higher.

    Args:
        score: a function from a list of PIL images to one score each (higher is better).
        pairs: from :func:`make_pairs`.

    Returns ``{"share", "won", "total", "by_kind": {"jpeg-4": share, ...}, "pairs": [one dict per pair]}``.
    """
    if not pairs:
        raise ValueError("no pairs to score")
    clean_by_scene: Dict[str, Image.Image] = {}
    for pair in pairs:
        clean_by_scene.setdefault(pair.scene, pair.clean)
    scenes = list(clean_by_scene)
    scores = [float(s) for s in score([clean_by_scene[s] for s in scenes] + [p.degraded for p in pairs])]
    if len(scores) != len(scenes) + len(pairs):
        raise ValueError(f"the scorer returned {len(scores)} scores for {len(scenes) + len(pairs)} images")
    clean_scores = dict(zip(scenes, scores[: len(scenes)]))
    rows = []
    for pair, degraded_score in zip(pairs, scores[len(scenes):]):
        rows.append({"scene": pair.scene, "kind": pair.kind, "level": pair.level,
                     "clean": clean_scores[pair.scene], "degraded": degraded_score,
                     "won": bool(clean_scores[pair.scene] > degraded_score)})
    by_kind = {}
    for kind, level in DEGRADATIONS:
        won = [r["won"] for r in rows if (r["kind"], r["level"]) == (kind, level)]
        if won:
            by_kind[f"{kind}-{level}"] = float(np.mean(won))
    won = sum(r["won"] for r in rows)
    return {"share": won / len(rows), "won": won, "total": len(rows), "by_kind": by_kind, "pairs": rows}


def model_scorer(model_dir, num_views: int = 3, seed: int = 3407, batch_size: int = 8):
    """A scoring function for :func:`pair_results` from a saved model directory (``AutoModel`` with remote code).

    Each image is scored as the mean of ``num_views`` fragment draws under ``seed`` (as the trainer's test).
    """
    import torch
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)

    def score(images: Sequence[Image.Image]) -> List[float]:
        out: List[float] = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                inputs = processor(list(images[start:start + batch_size]), num_samples=num_views, seed=seed)
                out += model(**inputs).score.float().reshape(-1).tolist()
        return out

    return score


def held_out_references(model_dir) -> Dict[str, Image.Image]:
    """The clean references of the test-part scenes of the split ``<run>/split-K/model`` was trained on."""
    import yaml

    from glia_hf.data.builtin import build_builtin_dataset
    from glia_hf.data.scales import canonical_name

    model_dir = Path(model_dir)
    split_dir, run_dir = model_dir.parent, model_dir.parent.parent
    if not split_dir.name.startswith("split-") or not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{model_dir} is not a run's split-K/model folder (no config.yaml two levels up); "
                         "pass --references DIR")
    split = int(split_dir.name.split("-", 1)[1])
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = config.get("data", {})
    if canonical_name(data.get("dataset", "")) != "builtin":
        raise ValueError(f"{run_dir} was trained on {data.get('dataset')!r}, not the built-in set; pass --references DIR")
    splits_file = Path(data.get("splits_file") or run_dir / "splits.json")
    if not splits_file.is_absolute() and not splits_file.is_file():
        splits_file = run_dir / splits_file
    scenes = json.loads(splits_file.read_text())["splits"][split].get("test_refs")
    if not scenes:
        raise ValueError(f"{splits_file}: split {split} names no test scenes (test_refs)")
    folder = build_builtin_dataset(data.get("data_dir"), **(data.get("dataset_options") or {}))
    return {scene: Image.open(folder / "reference" / f"{scene}.png").convert("RGB") for scene in scenes}


def folder_references(folder) -> Dict[str, Image.Image]:
    """Every image file of a folder (sorted by name), keyed by its file name without extension."""
    files = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
    if not files:
        raise ValueError(f"{folder}: no image files")
    return {p.stem: Image.open(p).convert("RGB") for p in files}


def format_results(result: dict) -> str:
    lines = [f"clean above degraded: {result['won']} of {result['total']} pairs ({result['share']:.0%})"]
    lines += [f"  {name:<8} {share:.0%}" for name, share in result["by_kind"].items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved model directory (e.g. outputs/quickstart/split-0/model)")
    parser.add_argument("--references", help="a folder of clean photographs (default: the held-out scenes of the "
                                             "model's built-in-set split)")
    parser.add_argument("--views", type=int, default=3, help="fragment draws averaged per image (default 3)")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--json", help="also write the result (every pair's scores) to this JSON file")
    parser.add_argument("--min-share", type=float, default=None,
                        help="exit with status 1 when the share of won pairs is below this (e.g. 0.8)")
    args = parser.parse_args(argv)
    try:
        references = folder_references(args.references) if args.references else held_out_references(args.model)
    except (ValueError, OSError) as error:
        parser.exit(2, f"sanity_pairs: {error}\n")
    result = pair_results(model_scorer(args.model, args.views, args.seed), make_pairs(references))
    result["scenes"] = list(references)
    print(format_results(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.min_share is not None and result["share"] < args.min_share:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
