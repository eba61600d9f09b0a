"""GLIANet web demo: drop photos, get their quality scores, the fragment mosaic the model saw and its attention map.

    python demo/app.py                                  # the quickstart's model, http://127.0.0.1:7860
    python demo/app.py --model path/to/glianet          # or GLIA_MODEL=path/or/hub-id python demo/app.py

The model is, in order: `--model`, the `GLIA_MODEL` environment variable, or the quickstart's
`outputs/quickstart/split-0/model`; another folder or Hub id can be loaded from the page. With none found the page
still opens and asks for one. Gradio's own `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT` choose the address.

Scores come from `pipeline("image-quality-assessment")` (one centred fragment view, or K random views with a seed):
they equal the pipeline's scores for the same files and options. Files are read by the pipeline's reader, so a file
that is not an image, corrupt or truncated, or larger than `--max-pixels`, gets a message in the page naming it.
The attention maps are drawn by `eval/attention_maps.py` (centred view, last frozen block).
"""

from __future__ import annotations

import argparse
import csv
import html
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a checkout: glia_hf and eval come from beside this folder
    sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402

from glia_hf.pipeline_glia import DEFAULT_MAX_PIXELS, PIPELINE_TASK, open_image_file  # noqa: E402


DEFAULT_MODEL = "outputs/quickstart/split-0/model"
MAX_ATTENTION_MAPS = 8  # attention figures per request: each is one more forward pass
COLUMNS = ["file", "score", "status", "message"]
_PIPELINES: dict[str, object] = {}
_LOCK = threading.Lock()


def resolve_model(argument: str | None = None) -> str | None:
    """The model to open with: `argument` (`--model`), else `$GLIA_MODEL`, else the quickstart's model if it exists."""
    if argument:
        return argument
    if os.environ.get("GLIA_MODEL"):
        return os.environ["GLIA_MODEL"]
    for base in (Path.cwd(), ROOT):
        if (base / DEFAULT_MODEL / "config.json").is_file():
            return str(base / DEFAULT_MODEL)
    return None


def load_pipeline(model: str):
    """The `image-quality-assessment` pipeline of a local folder or Hub id on the CPU, loaded once per model."""
    import glia_hf  # noqa: F401 -- registers the task with transformers
    from transformers import pipeline

    with _LOCK:
        if model not in _PIPELINES:
            _PIPELINES[model] = pipeline(PIPELINE_TASK, model=model, trust_remote_code=True, device="cpu")
        return _PIPELINES[model]


def scale_text(config) -> str:
    """What a score means, from the model's config: its name, its range, and its direction."""
    return (f"Scores are on the scale of **{config.score_name}**, from {config.score_min:g} to {config.score_max:g}; "
            "higher is better.")


def model_status(model: str | None) -> str:
    """The Markdown under the model box: what is loaded and what its scores mean, or why nothing is."""
    if not model or not model.strip():
        return ("**No model found.** Enter a GLIANet folder (e.g. the quickstart's `outputs/quickstart/split-0/model`) "
                "or a Hub id above and press *Load model*.")
    try:
        scorer = load_pipeline(model.strip())
    except Exception as error:  # noqa: BLE001 -- any loading failure is shown in the page
        return f"**Cannot load the model `{model}`:** {_one_line(error)}"
    return f"Model `{model.strip()}` loaded. {scale_text(scorer.model.config)}"


def _one_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _mosaic(scorer, image, num_samples, seed) -> np.ndarray:
    """The first fragment view the score used, de-normalised to an `(h, w, 3)` array in [0, 1]."""
    processor = scorer.image_processor
    fragments = processor(images=image, num_samples=num_samples, seed=seed)["fragment_values"][0]
    view = fragments[0] if fragments.ndim == 4 else fragments
    mean = np.asarray(processor.image_mean)[:, None, None]
    std = np.asarray(processor.image_std)[:, None, None]
    return np.clip(view.numpy() * std + mean, 0, 1).transpose(1, 2, 0)


def score_photos(files, model, num_views, seed, max_pixels=DEFAULT_MAX_PIXELS):
    """Score the uploaded files. Returns (results HTML, gallery items, table rows, CSV path)."""
    from eval.attention_maps import attention_map_figure

    paths = [getattr(f, "name", f) for f in (files or [])]
    if not paths:
        return "<p>Drop one or more photos above, then press <b>Score</b>.</p>", [], [], None
    if not model or not model.strip():
        return "<p class='glia-error'>No model loaded: enter a folder or Hub id above.</p>", [], [], None
    try:
        scorer = load_pipeline(model.strip())
    except Exception as error:  # noqa: BLE001
        message = f"Cannot load the model {model!r}: {_one_line(error)}"
        return f"<p class='glia-error'>{html.escape(message)}</p>", [], [], None
    num_samples = int(num_views) if num_views and int(num_views) > 1 else None
    seed = int(seed or 0) if num_samples else None
    options = {"num_samples": num_samples, "seed": seed} if num_samples else {}
    config = scorer.model.config
    out_dir = Path(tempfile.mkdtemp(prefix="glia_demo_"))

    rows, cards, gallery = [], [], []
    for index, path in enumerate(paths):
        name = Path(path).name
        try:
            image = open_image_file(path, max_pixels=max_pixels)  # the pipeline's own reader
            score = scorer(image, **options)["score"]
        except (OSError, ValueError) as error:
            message = str(error).replace(str(path), name).removeprefix(f"{name}: ")
            rows.append([name, None, "error", message])
            cards.append(f"<li class='glia-error' data-file='{html.escape(name)}'><b>{html.escape(name)}</b>: "
                         f"{html.escape(message)}</li>")
            continue
        rows.append([name, score, "ok", ""])
        cards.append(f"<li class='glia-result' data-file='{html.escape(name)}' data-score='{score!r}'>"
                     f"<b>{html.escape(name)}</b>: <span class='glia-score'>{score:.4f}</span> "
                     f"({config.score_min:g} to {config.score_max:g}, higher is better)</li>")
        gallery.append((np.asarray(image), f"{name}: the photo, score {score:.3f}"))
        views = f"view 1 of {num_samples} random views" if num_samples else "one centred view"
        gallery.append((_mosaic(scorer, image, num_samples, seed), f"{name}: the fragment mosaic the model saw ({views})"))
        if sum(row[2] == "ok" for row in rows) <= MAX_ATTENTION_MAPS:
            figure = attention_map_figure(scorer.model, [image], out_dir / f"attention_{index}.png",
                                          processor=scorer.image_processor, names=[name])
            gallery.append((str(figure), f"{name}: last-block attention, GLIANet vs the plain frozen ViT"))

    csv_path = out_dir / "glia_scores.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(COLUMNS)
        writer.writerows([[n, "" if s is None else repr(s), st, m] for n, s, st, m in rows])
    scored = sum(row[2] == "ok" for row in rows)
    summary = (f"<p>Scored {scored} of {len(rows)} file(s) with {html.escape(model.strip())} "
               f"({num_samples or 1} view(s) each). {html.escape(scale_text(config).replace('**', ''))}</p>")
    return summary + "<ul id='glia-result-list'>" + "".join(cards) + "</ul>", gallery, rows, str(csv_path)


def build_demo(model: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> gr.Blocks:
    """The page: model box, photo upload, options, results, images, table and CSV download."""
    with gr.Blocks(title="GLIANet image quality") as demo:
        gr.Markdown("# GLIANet: blind image quality assessment\nDrop one or more photos to score their perceptual "
                    "quality. No reference image is needed.")
        with gr.Row():
            model_box = gr.Textbox(value=model or "", label="Model: a local GLIANet folder or a Hub id",
                                   placeholder=DEFAULT_MODEL, elem_id="model", scale=4)
            load_button = gr.Button("Load model", elem_id="load-button", scale=1)
        status = gr.Markdown(elem_id="model-status")
        photos = gr.File(file_count="multiple", label="Photos", elem_id="photos")
        with gr.Row():
            views = gr.Number(value=1, precision=0, minimum=1, maximum=64, label="Fragment views per photo "
                              "(1 = one centred view; more = random views averaged)", elem_id="views")
            seed = gr.Number(value=0, precision=0, label="Seed of the random views", elem_id="seed")
        score_button = gr.Button("Score", variant="primary", elem_id="score-button")
        results = gr.HTML(elem_id="results")
        gallery = gr.Gallery(label="Photo, fragment mosaic, attention map", columns=3, elem_id="gallery",
                             object_fit="contain", height="auto")
        table = gr.Dataframe(headers=COLUMNS, label="Scores", elem_id="table", interactive=False)
        download = gr.File(label="Scores as CSV", elem_id="csv")

        load_button.click(model_status, inputs=model_box, outputs=status)
        demo.load(model_status, inputs=model_box, outputs=status)
        score_button.click(
            lambda files, m, k, s: score_photos(files, m, k, s, max_pixels=max_pixels),
            inputs=[photos, model_box, views, seed],
            outputs=[results, gallery, table, download],
            show_progress="minimal",
        )
    return demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="GLIANet folder or Hub id (default: $GLIA_MODEL, the quickstart's)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse larger images (default {DEFAULT_MAX_PIXELS:,}; 0 for no limit)")
    args = parser.parse_args(argv)
    # server_name / server_port left to Gradio: it reads GRADIO_SERVER_NAME and GRADIO_SERVER_PORT.
    build_demo(resolve_model(args.model), max_pixels=args.max_pixels or None).launch()


if __name__ == "__main__":
    main()
