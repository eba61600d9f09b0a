"""The model card of a trained model directory, written with ``huggingface_hub``'s ``ModelCard`` machinery.

``model_card.md`` at the repository root is a Jinja template for ``ModelCard.from_template``: its YAML header is
``{{ card_data }}``, which ``huggingface_hub`` fills from a ``ModelCardData`` (Hub metadata: ``pipeline_tag``,
``library_name``, ``license``, ``tags``, ``base_model``, ``datasets``, ``metrics`` and, from its ``EvalResult``s, the
``model-index`` that the Hub shows as the model's benchmark results); the body takes the text values and the
dimensions of the model's own configuration (:func:`config_dimensions`), so a card never describes a ViT-B/16 for a
model with another backbone.

What enters ``model-index`` (:func:`card_data`): the model's own test metrics, only for a run on human-rated data
with a pre-trained backbone. Results on pseudo-labelled data (the built-in set) or with a random backbone stay in the
card's text, labelled as such, and never in ``model-index``, where the Hub would show them as benchmark results.

``ModelCard.validate`` checks a card against the Hub's server and cannot run offline; the tests check instead that the
YAML parses and round-trips through ``ModelCardData``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

#: The Hub has no pipeline tag for image quality assessment; ``other`` is the honest one of its fixed list. The task
#: appears as a tag and as the ``model-index`` task type instead.
PIPELINE_TAG = "other"
TASK_TYPE = "image-quality-assessment"
TASK_NAME = "Image quality assessment"
LIBRARY_NAME = "transformers"
LICENSE = "apache-2.0"
TAGS = ("image-quality-assessment", "blind-iqa", "vision-transformer", "adapter", "glianet", "glia-hf")

#: Result keys (as in ``results.json``) -> the metric id written in the Hub metadata. Display labels come from
#: ``eval.reporting.METRIC_LABELS``.
HUB_METRIC_IDS = {"srcc": "spearmanr", "plcc": "pearsonr", "plcc_raw": "pearsonr", "krcc": "kendalltau",
                  "rmse": "rmse"}

#: Canonical data set name -> the name shown on the card.
DATASET_NAMES = {
    "live": "LIVE (release 2)", "csiq": "CSIQ", "tid2013": "TID2013", "kadid10k": "KADID-10k",
    "livec": "LIVE In the Wild Challenge (LIVEC)", "koniq10k": "KonIQ-10k", "spaq": "SPAQ",
    "flive": "FLIVE (PaQ-2-PiQ)", "builtin": "GLIA-HF built-in set (pseudo-labelled)",
}


def default_template_path() -> Path:
    """``model_card.md`` at the repository root (the folder above ``training/``)."""
    return Path(__file__).resolve().parent.parent / "model_card.md"


def model_config(directory) -> "object":
    """The ``GLIAConfig`` of a saved model directory: ``config.json``, or the one inside ``glia_method.json``
    (``adapter`` / ``vpt`` checkpoints, which have no ``config.json``)."""
    from glia_hf import GLIAConfig

    directory = Path(directory)
    if (directory / "config.json").is_file():
        return GLIAConfig.from_pretrained(directory)
    record = directory / "glia_method.json"
    if record.is_file():
        return GLIAConfig.from_dict(json.loads(record.read_text())["config"])
    raise FileNotFoundError(f"{directory}: no config.json or glia_method.json to describe the model from")


def _blocks_text(layers: Sequence[int], num_blocks: int) -> str:
    if list(layers) == list(range(num_blocks)):
        return f"all {num_blocks} blocks"
    return f"only blocks {', '.join(str(i) for i in layers)} of the {num_blocks}, counted from 0"


def config_dimensions(config) -> Dict[str, object]:
    """The template values that describe the architecture, read from a ``GLIAConfig``."""
    vit = config.backbone_config
    return {
        "image_size": config.image_size,
        "grid": " x ".join(str(n) for n in config.grid_size),
        "fragment": " x ".join(str(n) for n in config.fragment_size),
        "hidden_size": vit.hidden_size,
        "num_blocks": vit.num_hidden_layers,
        "glia_blocks": _blocks_text(config.glia_layers, vit.num_hidden_layers),
        "latent_dim": config.latent_dim,
        "down_hidden": config.adapter_down_hidden_size,
        "up_hidden": config.adapter_up_hidden_size,
        "heads": config.cross_attention_heads,
        "use_lgf": bool(config.use_lgf),
        "use_glr": bool(config.use_glr),
        "lambda_shape": "one scalar per block" if config.lambda_shape == "scalar" else "one value per latent channel",
    }


def hub_base_model(backbone) -> Optional[str]:
    """``backbone`` when it names a model on the Hub (``owner/name``), else ``None``: a dict of ViT fields (a random
    backbone) or a local directory is not a Hub model and must not appear as ``base_model``."""
    if not isinstance(backbone, str) or os.path.exists(backbone):
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(backbone)
    except HFValidationError:
        return None
    return backbone


def card_data(*, model_name: str, dataset: str, backbone, metrics: Mapping[str, float], benchmark: bool,
              split: Optional[int] = None) -> ModelCardData:
    """The Hub metadata of one trained model.

    Args:
        model_name: the model's name (``model-index`` needs one).
        dataset: the canonical name of the training data set (also the test data set).
        backbone: ``model.backbone`` of the config (a Hub id, a directory, or a dict of ViT fields).
        metrics: this model's test metrics, keyed as in ``results.json`` (``srcc``, ``plcc``, ...); the keys of
            :data:`HUB_METRIC_IDS` that are present and finite are used.
        benchmark: whether the numbers may be shown as benchmark results (human-rated data and a pre-trained
            backbone). When false there is no ``model-index``.
        split: which seeded split the model was tested on (named in the results' dataset config).
    """
    from eval.reporting import METRIC_LABELS

    present = [k for k in HUB_METRIC_IDS if isinstance(metrics.get(k), (int, float)) and metrics[k] == metrics[k]
               and abs(metrics[k]) != float("inf")]
    eval_results: Optional[List[EvalResult]] = None
    if benchmark and present:
        eval_results = [
            EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=dataset,
                       dataset_name=DATASET_NAMES.get(dataset, dataset), dataset_split="test",
                       dataset_config=None if split is None else f"glia-hf seeded split {split}",
                       metric_type=HUB_METRIC_IDS[key], metric_name=METRIC_LABELS.get(key, key.upper()),
                       metric_value=round(float(metrics[key]), 4))
            for key in present
        ]
    return ModelCardData(
        model_name=model_name,
        pipeline_tag=PIPELINE_TAG,
        library_name=LIBRARY_NAME,
        license=LICENSE,
        tags=list(TAGS),
        base_model=hub_base_model(backbone),
        datasets=[dataset],
        metrics=sorted({HUB_METRIC_IDS[k] for k in present}) or None,
        eval_results=eval_results,
    )


def render_model_card(data: ModelCardData, values: Mapping[str, object], config=None,
                      template_path: Optional[Path] = None) -> ModelCard:
    """Fill ``model_card.md`` (or ``template_path``) with ``data`` (the YAML header), ``values`` (the text) and,
    when a ``GLIAConfig`` is given, its dimensions (:func:`config_dimensions`)."""
    template_path = Path(template_path) if template_path is not None else default_template_path()
    if not template_path.is_file():
        raise FileNotFoundError(f"the model card template {template_path} is missing (it ships with the repository)")
    kwargs = dict(values)
    if config is not None:
        kwargs.update(config_dimensions(config))
    return ModelCard.from_template(data, template_path=str(template_path), **kwargs)


__all__ = ["DATASET_NAMES", "HUB_METRIC_IDS", "PIPELINE_TAG", "TASK_TYPE", "card_data", "config_dimensions",
           "default_template_path", "hub_base_model", "model_config", "render_model_card"]
