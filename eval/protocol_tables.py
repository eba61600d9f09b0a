"""The paper's six tables as protocols of :mod:`eval.protocols`: each table's cells and layout, registered once.

A protocol is one :class:`eval.protocols.Protocol`: how its cells are made from the base configs (rows x data-set
columns, and the config keys that define a cell), and how its table is laid out from the per-split results of those
cells (with :mod:`eval.reporting`). Adding a table is one more :func:`eval.protocols.register_protocol` call, here
or in any module imported before the protocol is run.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from eval import reporting
from eval.protocol_captions import get_dotted
from eval.protocol_runs import ProtocolError, read_trainable_parameters
from eval.protocols import BaseConfig, Cell, DataSource, Plan, Protocol, TableContext, glia_cell, register_protocol
from glia_hf.data.scales import canonical_name
from glia_hf.methods import METHODS, get_method
from training.config import DataConfig

logger = logging.getLogger("eval.protocols")


# ------------------------------------------------------------------------------------------------ methods


#: Paper Table 6's methods in its row order. Their row names are their registered labels
#: (``glia_hf.methods.MethodSpec.label``); a registered method the paper does not have joins the tables after them,
#: marked as our addition.
PAPER_METHOD_ORDER = ("linear_probe", "full_finetune", "adapter", "lora", "vpt", "glia")
PAPER_METHOD_LABELS = {method: get_method(method).label for method in PAPER_METHOD_ORDER}


def default_methods() -> Tuple[str, ...]:
    """The rows of Table 6: the paper's methods in its order, then every other registered method."""
    return tuple(m for m in PAPER_METHOD_LABELS if m in METHODS) + tuple(
        m for m in METHODS if m not in PAPER_METHOD_LABELS)


def method_label(method: str) -> str:
    """The row name of a method in every table (``"lora"`` -> ``"LoRA"``, ``"bitfit"`` -> ``"BitFit (our
    addition)"``): its registered ``MethodSpec.table_label``."""
    if method not in METHODS:
        return f"{method} (our addition)"
    return get_method(method).table_label()


def _by_method(plan: Plan, results, column=lambda c: c.column) -> Dict[str, Dict[Any, list]]:
    nested: Dict[str, Dict[Any, list]] = {}
    for i, c in enumerate(plan.cells):
        nested.setdefault(method_label(c.row[-1]), {})[column(c)] = results[i]
    return nested


# ------------------------------------------------------------------------------------------------ Table 1


def _cells_intra(bases: List[BaseConfig], options) -> Tuple[List[Cell], List[str]]:
    return [glia_cell(b, ("glia",), b.source.label) for b in bases], []


def _table_intra(plan: Plan, results, context: TableContext) -> reporting.Table:
    return reporting.intra_dataset_table(_by_method(plan, results), **context.layout())


register_protocol(Protocol(
    name="intra", file_stem="table1_intra", title="Table 1", build_cells=_cells_intra, build_table=_table_intra,
))


# ------------------------------------------------------------------------------------------------ Table 2


#: The built-in set's distortion families (after KADID-10k's grouping) for the cross-data-set stand-in.
STRUCTURAL_DISTORTIONS = (
    "gaussian_blur", "lens_blur", "motion_blur",  # blur
    "white_noise", "impulse_noise", "multiplicative_noise",  # noise
    "jpeg", "jpeg2000",  # compression
    "pixelate", "jitter", "non_eccentricity_patch",  # spatial
)
PHOTOMETRIC_DISTORTIONS = (
    "desaturate", "oversaturate", "color_quantization", "color_shift",  # colour
    "brighten", "darken",  # brightness
    "contrast_decrease", "sharpen",  # contrast and sharpness
)


def builtin_cross_sources(base: DataSource) -> Tuple[DataSource, DataSource]:
    """The two disjoint stand-in sets cut from the built-in data set (see :mod:`eval.protocols`)."""
    from glia_hf.data import SOURCES
    from glia_hf.data.builtin import source_path

    options = base.options_dict
    scenes = options.pop("scenes", None)
    if scenes is None:
        scenes = [s.scene for s in SOURCES if source_path(s) is not None]
    distortions = options.pop("distortions", None)
    structural = [d for d in STRUCTURAL_DISTORTIONS if distortions is None or d in distortions]
    photometric = [d for d in PHOTOMETRIC_DISTORTIONS if distortions is None or d in distortions]
    if len(scenes) < 4 or not structural or not photometric:
        raise ProtocolError("the built-in cross-data-set stand-in needs at least 4 scenes and both distortion families")
    halves = (list(scenes[0::2]), list(scenes[1::2]))
    result = []
    for name, chosen, family in (("structural", halves[0], structural), ("photometric", halves[1], photometric)):
        data_dir = None if base.data_dir is None else f"{base.data_dir}-cross-{name}"
        note = (f"builtin:{name} = {len(chosen)} scenes x {len(family)} {name} distortion types "
                f"({', '.join(family)})")
        result.append(DataSource(
            label=f"builtin:{name}", dataset=base.dataset, data_dir=data_dir,
            options={**options, "scenes": chosen, "distortions": list(family)}, note=note,
        ))
    return tuple(result)


def _cells_cross(bases: List[BaseConfig], options) -> Tuple[List[Cell], List[str]]:
    notes: List[str] = []
    if len(bases) >= 2:
        pairs = [(a, a.source, b.source) for a in bases for b in bases if a is not b]
    elif len(bases) == 1 and bases[0].source.is_builtin:
        first, second = builtin_cross_sources(bases[0].source)
        pairs = [(bases[0], first, second), (bases[0], second, first)]
        notes.append(
            "Stand-in for two data sets: the built-in set cut into two sets with disjoint scenes and disjoint "
            f"distortion families; {first.note}; {second.note}."
        )
    else:
        raise ProtocolError(
            "cross needs two or more --base-config files (one per data set), or one base config of the built-in "
            "data set (then two disjoint parts of it stand in for two data sets)"
        )
    cells = []
    for train_base, train_source, test_source in pairs:
        overrides: Dict[str, Any] = {"model.method": "glia"}
        if train_source is not train_base.source:
            overrides.update(train_source.train_overrides())
        overrides.update(test_source.test_overrides())
        cells.append(Cell(("glia",), (train_source.label, test_source.label), train_base, overrides,
                          train_source.label, test_source.label, result_part="cross"))
    return cells, notes


def _table_cross(plan: Plan, results, context: TableContext) -> reporting.Table:
    # Paper Table 2 reports SRCC only.
    return reporting.cross_dataset_table(_by_method(plan, results, lambda c: tuple(c.column)),
                                         **context.layout(("srcc",)))


register_protocol(Protocol(
    name="cross", file_stem="table2_cross", title="Table 2", build_cells=_cells_cross, build_table=_table_cross,
    defining_keys=("model.method", "data.test_dataset", "data.test_data_dir", "data.test_dataset_options"),
))


# ------------------------------------------------------------------------------------------------ Table 3


DEFAULT_FRACTIONS = (0.2, 0.4, 0.6)


def _cells_data_efficient(bases, options):
    cells = []
    for fraction in options.get("fractions") or DEFAULT_FRACTIONS:
        fraction = float(fraction)
        for b in bases:
            cell = glia_cell(b, (fraction, "glia"), b.source.label)
            cell.overrides["data.train_fraction"] = fraction
            cells.append(cell)
    return cells, []


def _fraction_reading(plan: Plan) -> Tuple[str, float]:
    """``(data.train_fraction_of, data.train_ratio)`` shared by the plan's runs (an error if they differ)."""
    readings = {(get_dotted(r.config, "data.train_fraction_of", DataConfig.train_fraction_of),
                 float(get_dotted(r.config, "data.train_ratio", DataConfig.train_ratio))) for r in plan.runs}
    if len(readings) != 1:
        raise ProtocolError(f"the runs of one table use different data.train_fraction_of / train_ratio: "
                            f"{sorted(readings)}")
    return readings.pop()


def _table_data_efficient(plan: Plan, results, context: TableContext) -> reporting.Table:
    nested: Dict[float, Dict[str, Dict[str, list]]] = {}
    for i, c in enumerate(plan.cells):
        fraction, method = c.row
        nested.setdefault(fraction, {}).setdefault(method_label(method), {})[c.column] = results[i]
    fraction_of, train_ratio = _fraction_reading(plan)
    return reporting.data_efficiency_table(nested, fraction_of=fraction_of, train_ratio=train_ratio,
                                           **context.layout())


register_protocol(Protocol(
    name="data_efficient", file_stem="table3_data_efficient", title="Table 3",
    build_cells=_cells_data_efficient, build_table=_table_data_efficient,
    defining_keys=("model.method", "data.train_fraction"),
))


# ------------------------------------------------------------------------------------------------ Table 4


#: Paper Table 4's rows as (GLR, LGF) in the paper's order, then the row we add (neither module).
COMPONENT_ROWS = ((True, False), (False, True), (True, True), (False, False))
#: Rows of Table 4 that are printed but not trained, and the row whose model they are.
COMPONENT_SAME_AS = {(True, False): (False, False)}
#: Table 4's columns and metrics, in the paper's order.
COMPONENT_SETTINGS = ("GLR", "LGF")
COMPONENT_METRICS = ("plcc", "srcc")
#: What a row of Table 4 that is not trained shows in its cells.
SAME_AS_NO_INTERACTION = "= no interaction (see note)"
#: Why (caption of Table 4; the same reasoning is in model_card.md's equations section).
COMPONENTS_NOTE = (
    "Note: GLR on with LGF off is not trained. In Eq. 3-4 as we read them, GLR (Eq. 4) only refines the semantic "
    "prior and only LGF (Eq. 3) reads that prior into the detail stream; with LGF off nothing reads the prior, so the "
    "model is the one without interaction (GLR off, LGF off), and the row would repeat that row's numbers. The paper "
    "prints distinct numbers for it, which Eq. 3-4 as written cannot produce. The row with neither module is our "
    "addition (not in the paper's Table 4)."
)


def _cells_components(bases, options):
    """Table 4: one cell per (GLR, LGF) row that is trained (rows in :data:`COMPONENT_SAME_AS` are not)."""
    cells = []
    for glr, lgf in COMPONENT_ROWS:
        if (glr, lgf) in COMPONENT_SAME_AS:
            continue
        for b in bases:
            cells.append(glia_cell(b, (glr, lgf), b.source.label, use_lgf=lgf, use_glr=glr))
    return cells, []


def _table_components(plan: Plan, results, context: TableContext) -> reporting.Table:
    """Table 4 in the paper's layout: columns GLR, LGF, then PLCC and SRCC per data set; rows in
    :data:`COMPONENT_ROWS` order; a row in :data:`COMPONENT_SAME_AS` shows :data:`SAME_AS_NO_INTERACTION`."""
    by_row: Dict[tuple, Dict[str, list]] = {}
    for i, c in enumerate(plan.cells):
        by_row.setdefault(tuple(c.row), {})[c.column] = results[i]
    ours = COMPONENT_ROWS[-1]
    items = []
    for row in COMPONENT_ROWS:
        values = {name: on for name, on in zip(COMPONENT_SETTINGS, row)}
        if row == ours:
            values[COMPONENT_SETTINGS[-1]] = f"{reporting.CROSS if not row[-1] else reporting.CHECK} (our addition)"
        items.append((values, by_row.get(row, {})))
    table = reporting.ablation_table(
        items, settings=COMPONENT_SETTINGS,
        description="Ablation of the GLIA block's components (GLR: Global-Local Refine, paper Eq. 4; LGF: "
                    "Local-Global Fusion, Eq. 3).",
        **context.layout(COMPONENT_METRICS),
    )
    for index, row in enumerate(COMPONENT_ROWS):
        if row in COMPONENT_SAME_AS:
            labels, values = table.rows[index]
            table.rows[index] = (labels, [SAME_AS_NO_INTERACTION] * len(values))
    return table


register_protocol(Protocol(
    name="ablation_components", file_stem="table4_ablation_components", title="Table 4",
    build_cells=_cells_components, build_table=_table_components,
    defining_keys=("model.method", "model.glia.use_lgf", "model.glia.use_glr"), note=COMPONENTS_NOTE,
))


# ------------------------------------------------------------------------------------------------ Table 5


#: Paper Table 5: (guidance stream, main stream); the third is GLIANet's default.
STREAM_ROWS = (("semantic", "semantic"), ("detail", "detail"), ("semantic", "detail"), ("detail", "semantic"))


def _cells_streams(bases, options):
    cells, notes = [], []
    for b in bases:
        backbone = b.model.get("backbone")
        side = backbone.get("image_size", 224) if isinstance(backbone, dict) else 224
        size = b.source.options.get("size") if b.source.is_builtin else None
        if size is not None and int(size) <= int(side):
            # A fragment grid as large as the whole image tiles it exactly: both streams are then the same picture.
            notes.append(f"Caution: the {b.source.label} images are {size} px, not larger than the {side} px model "
                         "input, so the detail and semantic streams show the same picture and the rows cannot differ.")
    for guidance, main in STREAM_ROWS:
        for b in bases:
            cells.append(glia_cell(b, (guidance, main), b.source.label, guidance_stream=guidance, main_stream=main))
    return cells, notes


def _table_streams(plan: Plan, results, context: TableContext) -> reporting.Table:
    settings = ("Guidance", "Main")
    rows: Dict[tuple, Dict[str, list]] = {}
    for i, c in enumerate(plan.cells):
        rows.setdefault(tuple(c.row), {})[c.column] = results[i]
    return reporting.ablation_table(
        [(dict(zip(settings, key)), by_col) for key, by_col in rows.items()], settings=settings,
        description=("Ablation of the two streams: which one guides (prior) and which one is scored (main); "
                     "semantic = the resized whole image, detail = the fragment grid."),
        **context.layout(),
    )


register_protocol(Protocol(
    name="ablation_streams", file_stem="table5_ablation_streams", title="Table 5",
    build_cells=_cells_streams, build_table=_table_streams,
    defining_keys=("model.method", "model.glia.main_stream", "model.glia.guidance_stream"),
))


# ------------------------------------------------------------------------------------------------ Table 6


#: Paper Table 6's LoDa row, quoted (not run): {data set: {metric: value}}; LoDa's trainable parameters are from
#: paper Table 1 ("LoDa(9M)").
LODA_TABLE6_QUOTED = {"kadid10k": {"srcc": 0.931, "plcc": 0.936}, "koniq10k": {"srcc": 0.932, "plcc": 0.944}}
LODA_ROW_LABEL = "LoDa (quoted from the paper, not run)"
LODA_PARAMS_QUOTED = "9M (quoted)"
METHODS_NOTE = (
    "The LoDa row is quoted from the paper's Table 6 (KADID-10k and KonIQ-10k only; 9M trainable parameters from its "
    "Table 1), not run here: this repository does not implement LoDa. The baselines (linear probe, full fine-tune, "
    "Adapter, LoRA, VPT) are fed the detail stream (the fragment grid, GLIA's main stream) and score its CLS token; "
    "the paper's \"Sample\" column, which may say what each method was fed, was lost from the text we have."
)


def _cells_methods(bases, options):
    methods = list(options.get("methods") or default_methods())
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ProtocolError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    cells = []
    for method in methods:
        for b in bases:
            cells.append(Cell((method,), b.source.label, b, {"model.method": method}, b.source.label))
    return cells, []


def count_trainable_parameters(values: Dict[str, Any]) -> Optional[int]:
    """Count the trainable parameters of the model a run config describes, without training or allocating it."""
    try:
        import torch
        from transformers import ViTConfig

        from glia_hf.methods import build_model, count_parameters

        model = values.get("model") or {}
        backbone = model.get("backbone", "google/vit-base-patch16-224")
        backbone = ViTConfig(**backbone) if isinstance(backbone, dict) else backbone
        with torch.device("meta"):
            built = build_model(model.get("method", "glia"), backbone, dict(model.get("method_options") or {}) or None,
                                **dict(model.get("glia") or {}))
        return int(count_parameters(built)[0])
    except Exception as error:  # e.g. a Hub backbone that is not cached, offline
        logger.info("could not count trainable parameters (%s)", error)
        return None


def _trainable_parameters(plan: Plan, cell: Cell) -> Optional[int]:
    """The trainable parameter count of a cell's model: from a finished run's results, else counted on a model
    built on the meta device (no weights allocated or downloaded), else ``None``."""
    runs = [run for run in plan.runs if run.cell is cell]
    for run in runs:
        count = read_trainable_parameters(run.run_dir)
        if count is not None:
            return count
    return count_trainable_parameters(runs[0].config) if runs else None


def _table_methods(plan: Plan, results, context: TableContext) -> reporting.Table:
    nested = _by_method(plan, results)
    params: Dict[str, Optional[int]] = {}
    for c in plan.cells:
        name = method_label(c.row[0])
        if name not in params:
            params[name] = _trainable_parameters(plan, c)
    table = reporting.finetune_methods_table(nested, params={m: p or 0 for m, p in params.items()},
                                             **context.layout())
    # A count that is neither in a results file nor computable is shown as missing, not as 0.
    table.rows = [(labels, [None if params[labels[0]] is None else values[0]] + values[1:])
                  for labels, values in table.rows]
    columns = list(dict.fromkeys(c.column for c in plan.cells))
    quoted = [LODA_TABLE6_QUOTED.get(canonical_name(column), {}).get(m) for column in columns for m in context.metrics]
    table.add_row([LODA_ROW_LABEL], [LODA_PARAMS_QUOTED] + quoted)
    return table


register_protocol(Protocol(
    name="methods", file_stem="table6_methods", title="Table 6", build_cells=_cells_methods,
    build_table=_table_methods, note=METHODS_NOTE,
))
