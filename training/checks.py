"""Before a run is built: the checks that fail fast on a backbone or a data set that cannot be had, the model of a
config, and the words that describe both (backbone, resolution, method label).

Each check raises a :class:`~training.config.ConfigError` whose one line names the config field to change.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from eval.reporting import describe_backbone
from glia_hf.data.scales import canonical_name
from training.config import ConfigError, TrainConfig, describe_resolution
from training.errors import is_disk_full


logger = logging.getLogger("glia_hf.training")


def backbone_argument(backbone):
    """A backbone config for a dict of its fields (random backbone; ``model_type`` picks the family, default ViT),
    else the Hub id / directory as is."""
    if isinstance(backbone, dict):
        from glia_hf.backbones import backbone_config_from

        return backbone_config_from(backbone)
    return backbone


def backbone_description(backbone) -> str:
    """The backbone in words (one wording everywhere: :func:`eval.reporting.describe_backbone`)."""
    return describe_backbone(backbone)


def resolution_of(config: TrainConfig) -> str:
    """The recipe's image resolution in words (``data.resize_short_side``; also in the saved processor config)."""
    return describe_resolution(config.data.resize_short_side, config.data.resize_resample)


def backbone_normalisation(config: TrainConfig):
    """The backbone's image mean and std: the config's, else its ``preprocessor_config.json``, else (a timm
    checkpoint) its ``pretrained_cfg``, else 0.5."""
    mean, std = config.model.image_mean, config.model.image_std
    if (mean is None or std is None) and isinstance(config.model.backbone, str):
        try:
            from transformers.utils import cached_file

            path = cached_file(
                config.model.backbone,
                "preprocessor_config.json",
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
            if path:
                stored = json.loads(Path(path).read_text())
                mean = mean if mean is not None else stored.get("image_mean")
                std = std if std is not None else stored.get("image_std")
        except Exception as error:  # an absent or unreadable file only means the defaults are used
            logger.info("no preprocessor config for %s (%s); using mean/std 0.5", config.model.backbone, error)
    if (mean is None or std is None) and isinstance(config.model.backbone, str):
        from glia_hf.convert_timm import timm_normalisation

        try:
            stated = timm_normalisation(config.model.backbone)
        except Exception as error:  # unreadable here means unloadable: building the model reports it
            logger.info("no timm pretrained_cfg for %s (%s)", config.model.backbone, error)
            stated = None
        if stated is not None:
            mean = mean if mean is not None else stated[0]
            std = std if std is not None else stated[1]
    return mean, std


HUB_ID_EXAMPLE = "google/vit-base-patch16-224"


def _looks_like_path(name: str) -> bool:
    """A Hub id is ``name`` or ``namespace/name``; anything with more slashes, or starting like a path, is a path."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def check_backbone(backbone) -> None:
    """Fail fast, with a :class:`ConfigError` naming ``model.backbone``, when the backbone cannot be had.

    A dict must be valid config fields of its family (``model_type``, ViT when absent); a local directory must hold ``config.json``; a Hub id must be in the
    local Hugging Face cache or, when the Hub may be reached (``HF_HUB_OFFLINE`` unset), be fetchable: its
    ``config.json`` is fetched once here, so that an unreachable Hub costs one request instead of the retries of
    every file of the checkpoint.
    """
    if isinstance(backbone, dict):
        from glia_hf.backbones import backbone_config_from

        try:
            backbone_config_from(backbone)
        except (TypeError, ValueError, KeyError) as error:
            raise ConfigError(f"model.backbone: these backbone config fields are not valid ({error})") from None
        return
    name = str(backbone)
    fix = ("set model.backbone (--model.backbone) to a local directory holding a ViT checkpoint (config.json and "
           f"weights) or to a Hub id such as {HUB_ID_EXAMPLE}")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.backbone {name!r} is a local path without a config.json; {fix}")
        return
    if _looks_like_path(name):
        raise ConfigError(f"model.backbone {name!r}: no such directory; {fix}")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return
    except ValueError as error:  # not a valid repository id
        raise ConfigError(f"model.backbone {name!r} is neither a local directory nor a Hub id ({error}); {fix}") \
            from None
    local = ("set model.backbone (--model.backbone) to a local directory holding a ViT checkpoint (config.json and "
             "weights)")
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ConfigError(f"model.backbone {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                          f"set: download it once with a network, or {local}")
    try:
        # One request without retries first: an unreachable Hub is reported at once, not after the download
        # helpers' back-off (about 25 s per file).
        from huggingface_hub.utils import get_session

        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as error:
        raise ConfigError(f"model.backbone {name!r} is not in the local Hugging Face cache and the Hub "
                          f"({constants.ENDPOINT}) cannot be reached ({_first_line(error)}): connect to the network, "
                          f"or {local}") from None
    try:
        hf_hub_download(name, "config.json", etag_timeout=10)
    except Exception as error:  # connection, missing repository, gated model: the user's to fix, named below
        raise ConfigError(f"model.backbone {name!r} cannot be fetched from the Hugging Face Hub "
                          f"({_first_line(error)}): check the id and the network (HF_TOKEN for a gated model), or "
                          f"{local}") from None


def _data_reader(name: str):
    """The function that ``load_iqa_dataset(name, ...)`` calls, or ``None`` for an unknown name."""
    from glia_hf.data import readers

    key = canonical_name(name)
    if key == "builtin":
        from glia_hf.data.builtin import build_builtin_dataset

        return build_builtin_dataset
    return {"csv": readers.read_csv_dataset, "pyiqa": readers.read_pyiqa_meta}.get(key) or readers.READERS.get(key)


def check_data(config: TrainConfig) -> None:
    """Fail fast, with a :class:`ConfigError` naming the ``data.*`` field, before anything is built or written:
    an unknown data set, a missing or nonexistent ``data_dir``, a reader option the reader does not take. The same
    for the cross-data-set test set. (What is inside the folder is checked by the readers, which name the file.)"""
    import inspect

    d = config.data
    checks = [("data.dataset", d.dataset, "data.data_dir", d.data_dir, "data.dataset_options", d.dataset_options)]
    if d.test_dataset:
        checks.append(("data.test_dataset", d.test_dataset, "data.test_data_dir", d.test_data_dir,
                       "data.test_dataset_options", d.test_dataset_options))
    for name_field, name, dir_field, folder, options_field, options in checks:
        reader = _data_reader(name)
        if reader is None:
            from glia_hf.data.readers import READERS

            raise ConfigError(f"{name_field} {name!r} is not a known data set; known: "
                              f"{sorted(READERS) + ['builtin', 'csv', 'pyiqa']}")
        key = canonical_name(name)
        what = "the CSV file" if key == "csv" else "the folder of the unpacked release"
        if folder is None and key != "builtin" and not (set(options) & {"csv_file", "image_dir"}):
            raise ConfigError(f"{dir_field} is not set: give {what} of {name}, e.g. --{dir_field} /data/{key}")
        if folder is not None and not Path(folder).expanduser().exists() and key != "builtin":
            raise ConfigError(f"{dir_field} {folder} does not exist: give {what} of {name}")
        accepted = inspect.signature(reader).parameters
        allowed = [p for p in accepted if p not in ("data_dir", "root", "csv_file", "image_dir")] + {
            "csv": ["csv_file", "image_dir"], "pyiqa": ["image_dir"]}.get(key, [])
        if key == "pyiqa" and "meta_info_file" not in options:
            raise ConfigError(f"{options_field} needs meta_info_file (the pyiqa meta-info CSV) for {name}")
        unknown = [k for k in options if k not in allowed]
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            raise ConfigError(f"{options_field}: {unknown} not options of the {key} reader; it takes {allowed}")


def build_model(config: TrainConfig, scale):
    """The model of ``config.model`` with the data set's score range and the configured loss.

    A backbone that cannot be loaded (missing, unreachable, not a ViT, weights that do not fit) and options the
    model rejects become a :class:`ConfigError` that names the config field to change.
    """
    from glia_hf.methods import build_model as build_method_model

    glia_options = dict(config.model.glia)
    glia_options.update(scale.config_kwargs())
    glia_options["loss"] = config.optim.loss
    backbone = config.model.backbone
    try:
        return build_method_model(
            config.model.method, backbone_argument(backbone), dict(config.model.method_options) or None,
            **glia_options,
        )
    except OSError as error:
        if is_disk_full(error) or not isinstance(backbone, str):
            raise
        raise ConfigError(f"model.backbone {backbone!r} cannot be loaded ({_first_line(error)}); set "
                          "model.backbone to a local directory holding a ViT checkpoint (config.json and weights) or "
                          f"to a Hub id such as {HUB_ID_EXAMPLE}") from error
    except ValueError as error:
        raise ConfigError(f"the model rejects its settings ({_first_line(error)}); check model.backbone, "
                          "model.glia and model.method_options") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def method_label(config: TrainConfig) -> str:
    """``glia`` or e.g. ``glia [use_glr=false]`` for an ablation; the baselines by name (with non-default options).

    What goes in the brackets is the method's ``MethodSpec.label_options`` (default: its options)."""
    from glia_hf.methods import get_method

    spec = get_method(config.model.method)
    if spec.label_options is not None:
        parts = spec.label_options(dict(config.model.glia), dict(config.model.method_options))
    else:
        parts = [f"{k}={v}" for k, v in sorted(config.model.method_options.items())]
    return config.model.method + (f" [{', '.join(parts)}]" if parts else "")
