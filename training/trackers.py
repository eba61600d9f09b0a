"""The experiment trackers of a training run: Accelerate's own (TensorBoard, when installed) and a CSV file.

``output.trackers`` names them; :func:`make_trackers` turns the names into what ``Accelerator(log_with=...)`` takes.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from accelerate.tracking import GeneralTracker


logger = logging.getLogger("glia_hf.training")


class CSVTracker(GeneralTracker):
    """A minimal Accelerate tracker that appends every logged value to ``<dir>/metrics.csv``.

    One row per value (``step, name, value, time``), so that splits, phases and metrics with different keys share
    one file and a resumed run simply appends. Accelerate calls it on the main process only.
    """

    name = "csv"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, logging_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(logging_dir) / "metrics.csv"

    @property
    def tracker(self):
        return self.path

    def start(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerow(["step", "name", "value", "time"])

    def store_init_configuration(self, values: dict):
        self.start()
        (self.path.parent / "hparams.json").write_text(json.dumps(values, indent=2, sort_keys=True, default=str))

    def log(self, values: dict, step: Optional[int] = None, **kwargs):
        self.start()
        now = time.time()
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    value = value.item()
                writer.writerow([step, key, value, f"{now:.3f}"])


def make_trackers(names: Sequence[str], logging_dir: Path) -> list:
    """The trackers of ``output.trackers``: ``csv`` (:class:`CSVTracker`, in ``logging_dir``) and ``tensorboard``
    (skipped with a warning when neither tensorboard nor tensorboardX is installed)."""
    trackers: list = []
    for name in names:
        if name == "csv":
            trackers.append(CSVTracker(logging_dir))
        elif name == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                try:
                    import tensorboardX  # noqa: F401
                except ImportError:
                    logger.warning("tensorboard is not installed; the tensorboard tracker is skipped")
                    continue
            trackers.append("tensorboard")
    return trackers
