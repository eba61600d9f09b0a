"""Evaluation in a training run (:class:`RunEvaluation`, a part of :class:`training.loop.Run`): scoring a test set
gathered from every process, the per-epoch point of the training curve, the optional calibration folded into the
head, and what one split writes (``predictions.csv``, the scatter plot, its saved model).
"""

from __future__ import annotations

import csv
import logging
from typing import Dict, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.metrics import compute_iqa_metrics
from eval.plots import scatter_plot
from training.checks import method_label
from training.data import SemanticCache
from training.publish import export_model


logger = logging.getLogger("glia_hf.training")


class RunEvaluation:
    """Scoring and per-split outputs. A part of :class:`training.loop.Run`, which sets what these methods read:
    ``config``, ``accelerator``, ``progress``, the data of :class:`training.run_data.RunData` and ``split_dir``."""

    @torch.no_grad()
    def predict(self, model, loader, expected: int, description: str,
                cache: Optional[SemanticCache] = None) -> np.ndarray:
        """Scores of every image of a prepared test loader, in row order, gathered from all processes."""
        accelerator = self.accelerator
        model.eval()
        scores, indices = [], []
        for batch in tqdm(loader, desc=description, disable=not accelerator.is_local_main_process, leave=False,
                          dynamic_ncols=True):
            outputs = model(pixel_values=batch["pixel_values"], fragment_values=batch["fragment_values"],
                            **self.guidance(model, batch, cache))
            score, index = accelerator.gather_for_metrics((outputs.score.float(), batch["index"]))
            scores.append(score.cpu().double())
            indices.append(index.cpu())
        scores, indices = torch.cat(scores).numpy(), torch.cat(indices).numpy()
        if len(indices) != expected or len(np.unique(indices)) != expected:
            raise RuntimeError(
                f"{description}: gathered {len(indices)} predictions for {len(np.unique(indices))} distinct of "
                f"{expected} images"
            )
        ordered = np.empty(expected, dtype=np.float64)
        ordered[indices] = scores
        return ordered

    def curve_point(self, model, test_loader, expected: int, split: int, epoch: int, loss: float,
                    cache: Optional[SemanticCache] = None) -> None:
        """One point of the training curve (written when ``output.plots`` is true): the epoch's mean loss and the test
        SRCC from one fragment draw per image under ``eval.seed`` (cheap: a fraction of a training epoch; the final
        test averages ``eval.num_views`` draws). No model is selected on it. The random number generators are left as
        they were, so a run with the curve trains exactly like one without, and a resumed run like an uninterrupted
        one."""
        import random

        collator = getattr(test_loader, "collate_fn", None)
        views = getattr(collator, "num_views", None)
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            if views is not None:
                collator.num_views = 1
            scores = self.predict(model, test_loader, expected, f"split {split}: epoch {epoch} test", cache)
        finally:
            if views is not None:
                collator.num_views = views
            random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])
        references = np.asarray(self.dataset.select(self.rows(split, "test"))["mos"], dtype=np.float64)
        srcc = float(compute_iqa_metrics(scores, references, names=("srcc",), allow_degenerate=True)["srcc"])
        self.progress.curve = list(self.progress.curve or []) + [{"epoch": epoch, "loss": loss, "srcc": srcc}]
        self.accelerator.log({f"split-{split}/curve/test_srcc_1view": srcc}, step=self.progress.step)
        self.accelerator.print(f"split {split} epoch {epoch}: test SRCC {srcc:.4f} (1 view, for the curve)")

    def calibrate(self, model, processor, train_rows, split: int,
                  cache: Optional[SemanticCache] = None) -> Optional[Dict[str, float]]:
        """Fit ``label = a * prediction + b`` on the training images and fold it into the head (see ``eval.calibrate``).

        Every process gathers the same predictions, so every copy of the model gets the same map. A fit that would
        reverse the ranking (``a <= 0``) is not applied.
        """
        rows = self.dataset.select(train_rows)
        loader = self.accelerator.prepare(self.eval_loader(rows, processor, num_views=1, ids=train_rows))
        scores = self.predict(model, loader, len(rows), f"split {split}: calibration", cache)
        head = self.accelerator.unwrap_model(model)
        low, high = head.config.score_min, head.config.score_max
        predicted, target = (scores - low) / (high - low), (np.asarray(rows["mos"], dtype=np.float64) - low) / (high - low)
        scale, shift = np.polyfit(predicted, target, deg=1) if np.ptp(predicted) > 0 else (0.0, float(target.mean()))
        if not scale > 0:
            logger.warning("split %d: calibration skipped (fitted slope %.3g would reverse the ranking)", split, scale)
            return None
        head.fold_affine_into_head(float(scale), float(shift))
        return {"scale": float(scale), "shift": float(shift)}

    def write_predictions(self, split: int, rows, positions, predictions: np.ndarray, name: str) -> dict:
        """Metrics of one evaluation; the main process writes ``<name>.csv`` and the scatter plot."""
        references = np.asarray(rows["mos"], dtype=np.float64)[positions] if len(positions) else np.array([])
        metrics = compute_iqa_metrics(predictions, references, allow_degenerate=True)
        metrics = {key: float(value) for key, value in metrics.items()}
        if self.accelerator.is_main_process:
            folder = self.split_dir(split)
            folder.mkdir(parents=True, exist_ok=True)
            images = [rows[int(i)]["image"] for i in positions]
            with open(folder / f"{name}.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["image", "mos", "prediction"])
                for image, mos, prediction in zip(images, references, predictions):
                    writer.writerow([image, repr(float(mos)), repr(float(prediction))])
            if self.config.output.plots:
                scatter_plot(predictions, references, folder / f"{name.replace('predictions', 'scatter')}.png",
                             title=f"{method_label(self.config)} on {self.config.data.dataset}, split {split} ({name})",
                             metrics=metrics, xlabel=f"Predicted ({self.scale.name})", ylabel="MOS")
        return metrics

    def finish_split(self, split, model, processor, test_rows, predictions, train_rows, num_trainable, num_total):
        accelerator = self.accelerator
        test = self.dataset.select(test_rows)
        metrics = self.write_predictions(split, test, list(range(len(test))), predictions, "predictions")
        result = {"split": split, **metrics, "num_train": len(train_rows), "num_test": len(test_rows),
                  "trainable_parameters": num_trainable, "total_parameters": num_total}
        accelerator.print(
            f"split {split}: SRCC {metrics['srcc']:.4f}  PLCC {metrics['plcc']:.4f}  KRCC {metrics['krcc']:.4f}  "
            f"RMSE {metrics['rmse']:.4f}"
        )
        accelerator.log({f"split-{split}/test/{k}": v for k, v in metrics.items()}, step=self.progress.step)
        if self.config.output.save_model:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                export_model(accelerator.unwrap_model(model), processor, self.split_dir(split) / "model")
        accelerator.wait_for_everyone()
        return result
