"""Caption notes of a protocol's table (:mod:`eval.protocols`), read from its runs' configs: the backbone, the results
label, the data sets' options, the training recipe, views and resolution."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from eval import reporting
from eval.reporting import describe_backbone
from glia_hf.data.scales import canonical_name
from training.config import DataConfig, EvalConfig, ModelConfig, OptimConfig, describe_resolution

if TYPE_CHECKING:  # only for annotations: eval.protocols imports this module
    from eval.protocols import Cell, Plan


def get_dotted(values: Dict[str, Any], dotted: str, default=None):
    """``values["a"]["b"]`` for ``"a.b"``, or ``default`` where a part is missing."""
    target: Any = values
    for part in dotted.split("."):
        if not isinstance(target, dict) or part not in target:
            return default
        target = target[part]
    return target


def backbone_of(cell: Cell) -> Any:
    """The cell's ``model.backbone`` (a Hub id, a directory, or a dict of ViT fields), else the default one."""
    backbone = get_dotted(cell.base.values, "model.backbone")
    return ModelConfig().backbone if backbone is None else backbone


def table_label(plan: Plan) -> Optional[str]:
    """The results label of a table (:func:`eval.reporting.result_label`): "randomly initialised backbone" when every
    run has a random backbone, "pseudo-MOS" when every run uses the built-in set, both, or ``None``."""
    random_backbone = all(isinstance(backbone_of(c), dict) for c in plan.cells)
    builtin = all(canonical_name(get_dotted(r.config, "data.dataset", "builtin")) == "builtin" for r in plan.runs)
    return reporting.result_label(random_backbone, builtin)


def plan_backbone(plan: Plan) -> str:
    names = []
    for cell in plan.cells:
        name = describe_backbone(backbone_of(cell))
        if name not in names:
            names.append(name)
    return "; ".join(names)


def describe_setup(plan: Plan) -> List[str]:
    """Caption notes read from the run configs: a data set read with non-default options (a subset of the built-in
    set, say) and the training recipe (epochs, batch, learning rate, test-time views)."""
    notes = []
    cross = any(cell.test_label for cell in plan.cells)  # a cross-data-set table: its parts are described once
    for cell in plan.cells:
        options = cell.base.source.options
        text = f"Data set {cell.base.source.label} read with options {json.dumps(options, sort_keys=True)}."
        if options and not cross and text not in notes:
            notes.append(text)
    if cross:
        for cell in plan.cells:
            options = cell.base.source.options
            text = (f"Both parts cut from the built-in set read with options {json.dumps(options, sort_keys=True)}."
                    if cell.base.source.is_builtin else None)
            if options and text and text not in notes:
                notes.append(text)
    recipes = []
    for run in plan.runs:
        optim, evaluation = run.config.get("optim") or {}, run.config.get("eval") or {}
        epochs = optim.get("epochs", OptimConfig.epochs)
        batch = optim.get("batch_size", OptimConfig.batch_size)
        lr = optim.get("lr", OptimConfig.lr)
        views = evaluation.get("num_views", EvalConfig.num_views)
        recipe = f"Recipe: {epochs} epoch(s), batch {batch}, lr {lr:g}, {views} test view(s) per image."
        if recipe not in recipes:
            recipes.append(recipe)
    return notes + recipes + describe_views_and_resolution(plan)


def describe_views_and_resolution(plan: Plan) -> List[str]:
    """Caption note: training views per image (``data.train_views``) and image resolution
    (``data.resize_short_side``) of the runs, per data set when they differ between data sets."""
    settings: Dict[str, List[str]] = {}
    for run in plan.runs:
        data = run.config.get("data") or {}
        text = (f"{data.get('train_views', DataConfig.train_views)} training view(s) per image per epoch, images at "
                + describe_resolution(data.get("resize_short_side"),
                                      data.get("resize_resample", DataConfig.resize_resample)))
        datasets = settings.setdefault(text, [])
        name = str(data.get("dataset", DataConfig.dataset))
        if name not in datasets:
            datasets.append(name)
    if len(settings) == 1:
        return [f"Training: {next(iter(settings))}."]
    return [f"Training on {', '.join(datasets)}: {text}." for text, datasets in settings.items()]
