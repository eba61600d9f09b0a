"""The ``--help`` text of ``training/train.py``, generated from the training config's dataclasses.

Each field's description is written once, in the ``Attributes:`` section of its dataclass's docstring
(``training/config.py``); :func:`config_help` lists every field with its default and the first sentence of that
description. ``training.config`` re-exports both public functions.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Dict, List

import yaml


_FIELD_LINE = re.compile(r"^    (\w+(?:, \w+)*): (.*)$")
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.(?:\s|$)")


def field_descriptions(cls) -> Dict[str, str]:
    """The ``Attributes:`` entries of a config dataclass's docstring, ``{field: description}``.

    An entry may name several fields (``num_splits, split_seed, train_ratio: ...``); they share its text.
    Continuation lines are joined; double backticks are dropped.
    """
    descriptions: Dict[str, str] = {}
    names: List[str] = []
    inside = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        match = _FIELD_LINE.match(line)
        if match:
            names = match.group(1).split(", ")
            for name in names:
                descriptions[name] = match.group(2).strip()
        elif line.startswith("        ") and names:
            for name in names:
                descriptions[name] += " " + line.strip()
        elif line.strip():
            break
    return {name: re.sub(r":\w+:`([^`]+)`", r"\1", text).replace("``", "") for name, text in descriptions.items()}


def _first_sentence(text: str) -> str:
    match = _SENTENCE_END.search(text)
    return text[: match.start() + 1] if match else text


def _inline(value: Any) -> str:
    """A default as it would be written in YAML, on one line."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def config_help() -> str:
    """Every config section and field with its default and the first sentence of its description.

    The text comes from the dataclasses' docstrings and defaults (the one place they are written down); it is the
    epilog of ``training/train.py --help``.
    """
    from training.config import TrainConfig  # here, not at the top: training.config re-exports this module

    defaults = TrainConfig()
    lines = ["config fields (in a YAML file given with --config, or on the command line as --section.field VALUE;",
             "the value in brackets is the default):"]
    for section in dataclasses.fields(TrainConfig):
        cls = type(getattr(defaults, section.name))
        summary = (inspect.getdoc(cls) or "").splitlines()[0]
        lines.append("")
        lines.append(f"{section.name}: {summary}")
        descriptions = field_descriptions(cls)
        for item in dataclasses.fields(cls):
            default = _inline(getattr(getattr(defaults, section.name), item.name))
            text = _first_sentence(descriptions.get(item.name, "(undocumented)"))
            lines.append(f"  --{section.name}.{item.name} [{default}]  {text}")
    return "\n".join(lines)


__all__ = ["config_help", "field_descriptions"]
