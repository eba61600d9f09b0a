"""Fill the repository's model card template (``model_card.md``) for one trained model directory.

The template marks each value as a name between double braces (``{{ dataset }}``). :func:`fill_model_card`
replaces the names it is given and leaves any other text alone (code blocks with braces included). A template that
holds none of the placeholders still gets the results: they are appended as a section of their own. The template's
own HTML comment addressed to its maintainers is dropped from the filled card.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
TEMPLATE_COMMENT = re.compile(r"<!--(?:(?!-->).)*?template(?:(?!-->).)*?-->\n?", re.DOTALL | re.IGNORECASE)

#: Used when the repository's ``model_card.md`` cannot be found (e.g. ``training/`` copied elsewhere).
FALLBACK_TEMPLATE = """---
library_name: transformers
tags:
  - image-quality-assessment
  - glianet
---

# {{ title }}

| | |
|---|---|
| Method | {{ method }} |
| Backbone | {{ backbone }} |
| Trained on | {{ dataset }} |
| Score | {{ score_name }}, higher is better, range {{ score_min }} to {{ score_max }} |
| Trainable parameters | {{ trainable_parameters }} |
| Split protocol | {{ split_protocol }} |

## Results

{{ results_table }}

{{ results_note }}

## Training details

{{ training_details }}
"""


def default_template_path() -> Path:
    """``model_card.md`` at the repository root (the folder above ``training/``)."""
    return Path(__file__).resolve().parent.parent / "model_card.md"


def load_template(path: Optional[Path] = None) -> str:
    path = Path(path) if path is not None else default_template_path()
    return path.read_text(encoding="utf-8") if path.is_file() else FALLBACK_TEMPLATE


def fill_model_card(template: str, values: Dict[str, str], notice: Optional[str] = None) -> str:
    """Return the template with every known ``{{ name }}`` replaced by ``values[name]``.

    Args:
        template: the card template.
        values: placeholder name -> text. Names the template does not use are ignored; placeholders the values do
            not cover are left as they are.
        notice: an optional paragraph placed right under the card's first heading (e.g. how to load a checkpoint
            that ``AutoModel`` cannot load).
    """
    card = TEMPLATE_COMMENT.sub("", template)
    used = set()

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name in values:
            used.add(name)
            return str(values[name])
        return match.group(0)

    card = PLACEHOLDER.sub(replace, card)
    if "results_table" not in used:
        card = card.rstrip("\n") + "\n\n## Results of this training run\n\n"
        for name in ("dataset", "split_protocol", "results_table", "results_note"):
            if name in values and name not in used and values[name]:
                card += f"{values[name]}\n\n"
    if notice:
        heading = re.search(r"^# .*$", card, flags=re.MULTILINE)
        if heading:
            card = card[: heading.end()] + "\n\n" + notice.strip() + "\n" + card[heading.end() :]
        else:
            card = notice.strip() + "\n\n" + card
    return card.rstrip("\n") + "\n"


__all__ = ["FALLBACK_TEMPLATE", "default_template_path", "fill_model_card", "load_template"]
