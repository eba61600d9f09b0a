"""Score images with a saved GLIANet directory, loaded the way a user without this package would load it.

    python examples/score_image.py --model outputs/quickstart/split-0/model [IMAGE ...]

Without an image it scores matplotlib's bundled sample photograph (grace_hopper.jpg), so that the quickstart needs
no file of yours. The model and processor come from `AutoModel` / `AutoImageProcessor` with `trust_remote_code=True`.
"""

import argparse

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel


def sample_photograph() -> str:
    """Path of the sample photograph that matplotlib ships."""
    from matplotlib import cbook

    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", help="image files (default: matplotlib's grace_hopper.jpg)")
    parser.add_argument("--model", required=True, help="a saved GLIANet directory or a Hub id")
    parser.add_argument("--num-samples", type=int, default=15, help="random fragment draws averaged per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=True)
    for path in args.images or [sample_photograph()]:
        with Image.open(path) as image:
            inputs = processor(image, num_samples=args.num_samples, seed=args.seed)
        with torch.no_grad():
            score = model(**inputs).score.item()
        print(f"{path}: {score:.4f} ({model.config.score_name}, {model.config.score_min:g} to {model.config.score_max:g})")


if __name__ == "__main__":
    main()
