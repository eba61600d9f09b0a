"""What a finished run leaves for others: its results files and summary line (:func:`finish_run`), the Hub-ready
directory of every split's model, that model's card (``README.md``) and the push of one split to the Hugging Face
Hub.

The card's template and Hub metadata live in :mod:`training.model_card`; this room fills in the run's values.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

from eval.reporting import FIT_NOTE, metric_label
from glia_hf.data.scales import canonical_name
from training.checks import backbone_description, method_label, resolution_of
from training.results import (_num, _train_fraction_text, per_split_markdown, reported_metrics, result_label,
                              whole_run_markdown, write_results)

if TYPE_CHECKING:
    from training.loop import Run


def finish_run(run: "Run", results: List[dict], wall_time: float) -> dict:
    """The end of a run, on the main process: ``results.json`` / ``.md`` / ``.csv``, the model cards, the summary
    line and, when asked, the Hub push of one split's model. Returns the results payload."""
    config, accelerator = run.config, run.accelerator
    payload = write_results(run, results, wall_time)
    if config.output.save_model:
        write_model_cards(run, payload)
    summary = payload["summary"]
    accelerator.print(
        f"{method_label(config)} on {config.data.dataset}, {len(results)} split(s): median SRCC "
        f"{_num(summary['srcc']['median'])}, PLCC {_num(summary['plcc']['median'])}; {wall_time:.0f} s; "
        f"results in {run.run_dir / 'results.json'}"
    )
    if config.hub.push_to_hub:
        split = config.hub.split if config.hub.split is not None else run.split_ids[0]
        url = push_to_hub(run, split)
        payload["pushed_to"] = url
        accelerator.print(f"pushed split {split}'s model to {url}")
    return payload


def export_model(model, processor, directory: Path) -> None:
    """Save a Hub-ready directory: weights (safetensors), config with auto_map and remote code, processor.

    How is the method's ``MethodSpec.export`` (``glia_hf.methods.save_model``): ``lora`` is merged into the ViT
    first, so it loads like any GLIANet checkpoint; ``adapter`` and ``vpt`` models are saved with
    ``save_method_checkpoint`` (they need ``glia_hf`` to load). The model card is written at the end of the run,
    when every split's results are known.
    """
    from glia_hf.methods import save_model

    if directory.exists():
        shutil.rmtree(directory)
    save_model(model, directory)
    processor.save_pretrained(directory)


def card_values(run: "Run", payload: dict, split_result: dict, model_id: str) -> Dict[str, str]:
    """The text values of the model card of one split's model (the template's names; see ``model_card.md``)."""
    from training.model_card import DATASET_NAMES

    config = run.config
    scale = run.scale
    label = result_label(config)
    num_splits = len(run.splits["splits"])
    by_scene = run.splits.get("by_reference")
    protocol = (
        f"split {split_result['split']} of {num_splits} seeded {round(config.data.train_ratio * 100)}/"
        f"{round((1 - config.data.train_ratio) * 100)} train/test splits (seed {run.splits.get('seed')}, "
        f"{'by reference scene' if by_scene else 'by image'}); trained on its training part "
        f"({split_result['num_train']} images"
        + (f"; {_train_fraction_text(config)}" if config.data.train_fraction else "")
        + f"), tested on its test part ({split_result['num_test']} images)"
    )
    metrics = reported_metrics(payload["splits"])
    table = (
        f"This model (split {split_result['split']}) on {split_result['num_test']} test images: "
        + ", ".join(f"{metric_label(m)} {_num(split_result.get(m))}" for m in metrics) + "."
        + "\n\n" + whole_run_markdown(payload["summary"], metrics)
        + "\n\n" + FIT_NOTE
        + "\n\nPer split:\n\n" + per_split_markdown(payload["splits"])
    )
    notes = []
    if label:
        notes.append(
            f"**These numbers are labelled \"{label}\".** "
            + ("The backbone was randomly initialised, not pre-trained. " if isinstance(config.model.backbone, dict)
               else "")
            + ("The labels are pseudo-MOS computed by a full-reference metric (SSIM) on synthetically distorted "
               "photographs of the GLIA-HF built-in set, not human opinions. " if "pseudo-MOS" in label else "")
            + "They show that the pipeline runs; they say nothing about agreement with human quality judgements, "
              "and they are kept out of the card's `model-index` metadata."
        )
    from glia_hf.methods import get_method

    spec = get_method(config.model.method)
    if spec.export_note:
        notes.append(spec.export_note)
    details = (
        f"Trained with `training/train.py` (GLIA-HF, Accelerate) on {payload['num_processes']} process(es), mixed "
        f"precision `{payload['mixed_precision']}`. AdamW (lr {config.optim.lr:g}, weight decay "
        f"{config.optim.weight_decay:g}, betas {tuple(config.optim.betas)}), {config.optim.scheduler} schedule stepped "
        f"per optimiser step (warm-up {config.optim.warmup_steps or config.optim.warmup_ratio:g}), "
        f"{config.optim.epochs} epochs, batch {config.optim.batch_size} (accumulation "
        f"{config.optim.gradient_accumulation_steps}), seed {config.optim.seed}, {config.optim.loss.upper()} loss on "
        f"labels normalised to [0, 1], {config.data.train_views} training view(s) per image per epoch. Images at "
        f"{resolution_of(config)} in training, test and scoring (`resize_short_side` in the saved processor "
        f"config). Augmentation: horizontal flip p={config.augmentation.hflip:g}, vertical flip "
        f"p={config.augmentation.vflip:g}, {'random' if config.augmentation.random_offsets else 'centred'} fragment "
        f"offsets. Test scores: mean over {config.eval.num_views} fragment draws (seed {config.eval.seed}). "
        f"Training and test time of the run: {payload['wall_time_seconds']:.0f} s. Versions: "
        + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()) + "."
        + ("\n\nGLIA options: `" + json.dumps(config.model.glia, sort_keys=True) + "`" if config.model.glia else "")
        + ("\n\nMethod options: `" + json.dumps(config.model.method_options, sort_keys=True) + "`"
           if config.model.method_options else "")
    )
    dataset = canonical_name(config.data.dataset)
    return {
        "title": f"{spec.description} trained on {DATASET_NAMES.get(dataset, config.data.dataset)}"
                 + (f" ({label})" if label else ""),
        "notice": method_checkpoint_notice(config.model.method) if spec.export == "method_checkpoint" else "",
        "method": f"`{method_label(config)}`: {spec.description}",
        "backbone": backbone_description(config.model.backbone),
        "dataset": f"{config.data.dataset} ({scale.description})",
        "score_name": scale.description,
        "score_min": f"{scale.min:g}",
        "score_max": f"{scale.max:g}",
        "trainable_parameters": f"{split_result['trainable_parameters']:,} of {split_result['total_parameters']:,}",
        "split_protocol": protocol,
        "results_table": table,
        "results_note": "\n\n".join(notes),
        "training_details": details,
        "model_id": model_id,
    }


def method_checkpoint_notice(method: str) -> str:
    return (
        f"> **Note:** this `{method}` model is saved with `glia_hf.methods.save_method_checkpoint` "
        "(`glia_method.json` + `glia_method.safetensors`), because its extra modules have no place in a plain GLIANet. "
        "Load it with `glia_hf.methods.load_method_checkpoint(path)` (needs the `glia_hf` package); `AutoModel` "
        "does not load it."
    )


def write_model_cards(run: "Run", payload: dict) -> None:
    """Write ``README.md`` (the model card) into every split's saved model directory.

    Each card carries Hub metadata (:func:`training.model_card.card_data`); its ``model-index`` holds the split
    model's own test metrics only when no result label applies (human-rated data, pre-trained backbone)."""
    from training.model_card import card_data, model_config, render_model_card

    config = run.config
    for result in payload["splits"]:
        directory = run.split_dir(result["split"]) / "model"
        if not directory.is_dir():
            continue
        model_id = config.hub.hub_model_id or str(directory)
        values = card_values(run, payload, result, model_id)
        data = card_data(model_name=config.hub.hub_model_id or f"{run.run_dir.name}-split-{result['split']}",
                         dataset=canonical_name(config.data.dataset), backbone=config.model.backbone,
                         metrics=result, benchmark=result_label(config) is None, split=result["split"])
        card = render_model_card(data, values, model_config(directory))
        card.save(directory / "README.md")


def push_to_hub(run: "Run", split: int) -> str:
    """Create the repository if needed and upload the split's model directory with ``huggingface_hub``."""
    from huggingface_hub import HfApi

    hub = run.config.hub
    directory = run.split_dir(split) / "model"
    if not directory.is_dir():
        raise FileNotFoundError(f"no saved model for split {split} at {directory} (output.save_model must be true)")
    api = HfApi()
    api.create_repo(repo_id=hub.hub_model_id, private=hub.private, exist_ok=True, repo_type="model")
    api.upload_folder(
        repo_id=hub.hub_model_id, folder_path=str(directory), repo_type="model",
        commit_message=f"GLIA-HF: {method_label(run.config)} on {run.config.data.dataset}, split {split}",
    )
    return f"https://huggingface.co/{hub.hub_model_id}"
