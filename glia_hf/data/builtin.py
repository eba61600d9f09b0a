"""The built-in offline data set: real photographs from installed wheels, distorted KADID-style, pseudo-labelled.

No human-rated IQA data set can be downloaded where this project is developed and tested, so it ships a recipe for
one instead. The photographs come from packages the project already installs (scikit-image, scikit-learn, matplotlib)
plus the small pure-Python wheel ``sporco`` (see :data:`SOURCES` and the ``LICENSES.md`` written next to the
images). Each photograph is one reference scene: it is resized so that its short side is ``size`` pixels (Lanczos;
a few small photographs are therefore enlarged slightly) and centre-cropped to ``size x size``; grayscale
photographs are repeated over three channels. Every scene is distorted with each of the types in
:data:`glia_hf.data.distortions.DISTORTIONS` at 5 levels.

**Labels are pseudo-MOS, not human opinions.** Each distorted image gets

    pseudo_mos = 1 + 4 * clip(SSIM(reference, distorted), 0, 1)        (range 1-5, higher is better, like KADID-10k)

where SSIM is scikit-image's ``structural_similarity`` (Wang et al., 2004) computed on the RGB images with
``channel_axis``, ``data_range=255``, an 11x11 Gaussian window of sigma 1.5 and population covariances (the
settings of the original paper), after the downsampling of the authors' reference implementation: images are
averaged over ``f x f`` blocks with ``f = max(1, round(min(height, width) / 256))`` (``f = 2`` for 384 px). The map
is linear, so pseudo-MOS ranks equal SSIM ranks. A model trained on it learns to predict SSIM without the
reference, which exercises the whole pipeline; its numbers say nothing about agreement with human raters.

The build is deterministic for a given ``seed`` and package versions, and cached: it is written into a temporary
folder next to ``root``, finished with a completion marker (``COMPLETE.json``), then renamed into place, so an
interrupted build never looks complete and is redone on the next call.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, features

from .distortions import DISTORTIONS, NUM_LEVELS, apply_distortion
from .errors import IQADataError, PathLike
from .images import load_image

logger = logging.getLogger(__name__)

BUILTIN_VERSION = 1
DEFAULT_SIZE = 384
MARKER = "COMPLETE.json"
LABELS = "labels.csv"
LABEL_COLUMNS = ("image", "ref", "distortion", "level", "pseudo_mos", "ssim")


@dataclass(frozen=True)
class PhotoSource:
    """One photograph shipped inside an installed package, with where it came from and its licence."""

    scene: str
    package: str  # the pip name
    module: str  # the importable top-level module whose folder holds the file
    relpath: str
    description: str
    origin: str
    licence: str


_SKIMAGE = "the scikit-image docstring of skimage.data."
SOURCES: Sequence[PhotoSource] = (
    PhotoSource("astronaut", "scikit-image", "skimage", "data/astronaut.png", "Astronaut Eileen Collins",
                "NASA Great Images database (https://flic.kr/p/r9qvLn)",
                "No known copyright restrictions, released into the public domain (" + _SKIMAGE + "astronaut)"),
    PhotoSource("camera", "scikit-image", "skimage", "data/camera.png", "Man with a camera, grayscale",
                "photograph by Lav Varshney", "CC0 by the photographer (" + _SKIMAGE + "camera)"),
    PhotoSource("chelsea", "scikit-image", "skimage", "data/chelsea.png", "Chelsea the cat",
                "photograph by Stefan van der Walt", "CC0 by the photographer (" + _SKIMAGE + "chelsea)"),
    PhotoSource("coffee", "scikit-image", "skimage", "data/coffee.png", "Coffee cup (courtesy of Pikolo Espresso Bar)",
                "photograph by Rachel Michetti", "CC0 by the photographer (" + _SKIMAGE + "coffee)"),
    PhotoSource("rocket", "scikit-image", "skimage", "data/rocket.jpg", "Launch of DSCOVR on a Falcon 9",
                "SpaceX Photos on Flickr (https://www.flickr.com/photos/spacexphotos/16511594820/)",
                "Released into the public domain by SpaceX (" + _SKIMAGE + "rocket)"),
    PhotoSource("hubble_deep_field", "scikit-image", "skimage", "data/hubble_deep_field.jpg",
                "Hubble eXtreme Deep Field", "NASA, via HubbleSite",
                "NASA material, may be freely used in the public domain (" + _SKIMAGE + "hubble_deep_field)"),
    PhotoSource("retina", "scikit-image", "skimage", "data/retina.jpg", "Fundus photograph of a normal left eye",
                "Wikimedia Commons; Mikael Haggstrom, 'Medical gallery of Mikael Haggstrom 2014'",
                "CC0 1.0 Universal Public Domain Dedication (" + _SKIMAGE + "retina)"),
    PhotoSource("coins", "scikit-image", "skimage", "data/coins.png", "Greek coins from Pompeii, grayscale",
                "Brooklyn Museum Collection", "No known copyright restrictions (" + _SKIMAGE + "coins)"),
    PhotoSource("brick", "scikit-image", "skimage", "data/brick.png", "Brick wall, grayscale",
                "CC0Textures (Bricks25), perspective-corrected and cropped by scikit-image",
                "CC0 (" + _SKIMAGE + "brick)"),
    PhotoSource("grass", "scikit-image", "skimage", "data/grass.png", "Grass, grayscale",
                "DeviantArt, linolafett, 'Grass 01', cropped by scikit-image", "CC0 (" + _SKIMAGE + "grass)"),
    PhotoSource("gravel", "scikit-image", "skimage", "data/gravel.png", "Gravel, grayscale",
                "CC0Textures (Gravel04), cropped by scikit-image", "CC0 (" + _SKIMAGE + "gravel)"),
    PhotoSource("clock", "scikit-image", "skimage", "data/clock_motion.png",
                "Wall clock, grayscale; the photograph itself already shows horizontal camera-motion blur",
                "photograph by Stefan van der Walt",
                "Released into the public domain by the photographer (" + _SKIMAGE + "clock)"),
    PhotoSource("ihc", "scikit-image", "skimage", "data/ihc.png",
                "Immunohistochemical staining of colonic glands (micrograph)",
                "Center for Microscopy And Molecular Imaging (CMMI)",
                "No known copyright restrictions (" + _SKIMAGE + "immunohistochemistry)"),
    PhotoSource("china", "scikit-learn", "sklearn", "datasets/images/china.jpg", "Chinese temple",
                "Flickr, danielbuechele (https://www.flickr.com/photos/danielbuechele/6061409035/)",
                "CC BY 2.0, 'Some rights reserved by danielbuechele' (sklearn/datasets/images/README.txt)"),
    PhotoSource("flower", "scikit-learn", "sklearn", "datasets/images/flower.jpg", "Flower",
                "Flickr, vultilion (https://www.flickr.com/photos/vultilion/6056698931/); scikit-learn's README "
                "gives the attribution line as danielbuechele but links to vultilion",
                "CC BY 2.0 (sklearn/datasets/images/README.txt)"),
    PhotoSource("grace_hopper", "matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                "Portrait of Grace Hopper in uniform",
                "U.S. Navy official photograph (Wikimedia Commons, 'Commodore Grace M. Hopper, USN (covered)')",
                "Work of the U.S. federal government, public domain in the United States; matplotlib ships the "
                "file in its sample data without a licence note of its own"),
    PhotoSource("barbara", "sporco", "sporco", "data/barbara.png", "Barbara (classic test image)",
                "http://www.hlevkin.com/06testimages.htm, attributed to Allen Gersho; borders cropped by sporco",
                "Believed public domain or freely redistributable (sporco/data/README.rst)"),
    PhotoSource("kodim23", "sporco", "sporco", "data/kodim23.png", "Kodak test image 23 (parrots)",
                "http://r0k.us/graphics/kodak/kodim23.html; last line repaired by sporco",
                "Kodak images appear to have been released for unrestricted use (sporco/data/README.rst)"),
    PhotoSource("monarch", "sporco", "sporco", "data/monarch.png", "Monarch butterfly",
                "Waterloo BragZone (http://links.uwaterloo.ca/Repository.html)",
                "Considered free of copyright restrictions (sporco/data/README.rst)"),
    PhotoSource("sail", "sporco", "sporco", "data/sail.png", "Sailboats",
                "Waterloo BragZone (http://links.uwaterloo.ca/Repository.html)",
                "Considered free of copyright restrictions (sporco/data/README.rst)"),
    PhotoSource("tulips", "sporco", "sporco", "data/tulips.png", "Tulips",
                "Waterloo BragZone (http://links.uwaterloo.ca/Repository.html)",
                "Considered free of copyright restrictions (sporco/data/README.rst)"),
)


def _find_spec(module: str):
    """``importlib.util.find_spec``, with ``None`` also for a package that cannot even be looked up (a broken or
    blocked install raises instead of returning ``None``)."""
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def source_path(source: PhotoSource) -> Optional[Path]:
    """Where the installed package keeps the photograph, or ``None`` if the package or file is absent.

    The package is located without importing it, and nothing is ever downloaded."""
    spec = _find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / source.relpath
    return path if path.is_file() else None


#: How to install what builds the built-in set (SSIM from scikit-image; photographs from scikit-image, scikit-learn
#: and sporco). The benchmark readers do not need it: they are in the base install.
BUILDER_EXTRA = 'pip install "glia-hf[train]"'


def require_builder_packages() -> None:
    """Raise one clear ``ImportError`` naming the install command when scikit-image (SSIM) is not installed."""
    if _find_spec("skimage") is None:
        raise ImportError(
            "building the built-in data set needs scikit-image (its SSIM labels the images), scikit-learn and sporco "
            f"(the photographs), which are not installed: {BUILDER_EXTRA}"
        )


def default_builtin_root() -> Path:
    """``$HF_HOME/glia_hf`` if ``HF_HOME`` is set, else ``$XDG_CACHE_HOME/glia_hf`` (default ``~/.cache/glia_hf``)."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "glia_hf"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glia_hf"


# ---------------------------------------------------------------------------------------------------------- labels


def ssim_pseudo_mos(reference: np.ndarray, distorted: np.ndarray) -> tuple:
    """``(ssim, pseudo_mos)`` for two ``uint8`` RGB images; see the module docstring for the exact recipe."""
    from skimage.metrics import structural_similarity

    height, width = reference.shape[:2]
    factor = max(1, int(round(min(height, width) / 256)))

    def down(image: np.ndarray) -> np.ndarray:
        # float32 halves the cost of SSIM's filtering; the values agree with float64 to about 1e-6.
        image = image.astype(np.float32)
        if factor == 1:
            return image
        h, w = height // factor * factor, width // factor * factor
        return image[:h, :w].reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3), dtype=np.float32)

    ssim = structural_similarity(
        down(reference), down(distorted), channel_axis=-1, data_range=255.0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )
    ssim = float(ssim)
    return ssim, 1.0 + 4.0 * min(max(ssim, 0.0), 1.0)


def _rng(seed: int, scene: str, distortion: str) -> np.random.Generator:
    # The same stream at every level of one (scene, distortion): only the strength changes between levels.
    return np.random.default_rng([seed, zlib.crc32(scene.encode()), zlib.crc32(distortion.encode())])


def prepare_reference(path: PathLike, size: int) -> Image.Image:
    """Load a photograph as RGB, resize its short side to ``size`` (Lanczos) and centre-crop ``size x size``."""
    image = load_image(path)
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.LANCZOS)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def _image_name(scene: str, distortion: str, level: int) -> str:
    return f"images/{scene}__{distortion}__{level}.png"


def _distort_scene(job: tuple) -> List[dict]:
    """Worker: every level of one (scene, distortion); writes the PNGs, returns their label rows."""
    folder, scene, distortion, seed = job
    reference = np.asarray(Image.open(Path(folder) / "reference" / f"{scene}.png").convert("RGB"))
    rows = []
    for level in range(1, NUM_LEVELS + 1):
        distorted = apply_distortion(reference, distortion, level, _rng(seed, scene, distortion))
        ssim, pseudo_mos = ssim_pseudo_mos(reference, distorted)
        name = _image_name(scene, distortion, level)
        Image.fromarray(distorted).save(Path(folder) / name, "PNG", compress_level=1)
        rows.append({"image": name, "ref": scene, "distortion": distortion, "level": level,
                     "pseudo_mos": f"{pseudo_mos:.6f}", "ssim": f"{ssim:.6f}"})
    return rows


# ---------------------------------------------------------------------------------------------------------- build


def _params(seed: int, size: int, scenes: Sequence[str], distortions: Sequence[str]) -> dict:
    return {"version": BUILTIN_VERSION, "seed": seed, "size": size, "scenes": list(scenes),
            "distortions": list(distortions), "levels": NUM_LEVELS,
            "jpeg2000_codec": "openjpeg" if features.check("jpg_2000") else "webp stand-in"}


def _is_complete(root: Path, params: dict) -> bool:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("params") != params or not (root / LABELS).is_file():
        return False
    try:
        present = sum(1 for name in os.listdir(root / "images") if name.endswith(".png"))
    except OSError:
        return False
    return present == marker.get("num_images")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(root: Path) -> None:
    for partial in root.parent.glob(f".{root.name}.partial-*"):
        try:
            pid = int(partial.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(partial, ignore_errors=True)


def _write_licenses(folder: Path, sources: Sequence[PhotoSource], paths: Dict[str, Path]) -> None:
    lines = [
        "# Built-in GLIA-HF data set: photographs and licences",
        "",
        "Every reference scene of this pseudo-labelled data set is a photograph shipped inside an installed Python",
        "package. The distorted images are derived from them by glia_hf.data.builtin. Source, origin and licence of",
        "each photograph, as stated by the package that ships it:",
        "",
    ]
    for source in sources:
        lines += [
            f"## {source.scene}",
            "",
            f"- Photograph: {source.description}",
            f"- Shipped by: the `{source.package}` package, file `{source.module}/{source.relpath}`",
            f"- Origin: {source.origin}",
            f"- Licence: {source.licence}",
            "",
        ]
    (folder / "LICENSES.md").write_text("\n".join(lines))


def _write_readme(folder: Path, params: dict, num_images: int) -> None:
    from .distortions import DISTORTIONS as table

    rows = "\n".join(f"| {name} | {desc} | {', '.join(f'{p:g}' for p in values)} |" for name, (_, values, desc) in table.items() if name in params["distortions"])
    text = f"""# GLIA-HF built-in data set (pseudo-labelled)

{len(params['scenes'])} reference scenes x {len(params['distortions'])} distortion types x {NUM_LEVELS} levels =
{num_images} distorted images of {params['size']}x{params['size']} pixels, seed {params['seed']}, builder version
{params['version']}.

The labels in `labels.csv` are **pseudo-MOS**, not human opinions: `pseudo_mos = 1 + 4 * clip(SSIM, 0, 1)` with SSIM
(scikit-image `structural_similarity`, Wang et al. 2004) between each distorted image and its reference, computed
on RGB after the reference implementation's downsampling. Higher is better, range 1-5. See
`glia_hf/data/builtin.py` for the exact recipe, and `LICENSES.md` for where each photograph comes from.

Columns of `labels.csv`: image (relative path), ref (scene), distortion, level (1 = mild .. 5 = strong),
pseudo_mos, ssim. References are in `reference/`. JPEG 2000 codec: {params['jpeg2000_codec']}.

| distortion | parameter | levels 1-5 |
|---|---|---|
{rows}
"""
    (folder / "README.md").write_text(text)


def build_builtin_dataset(
    root: Optional[PathLike] = None,
    seed: int = 3407,
    scenes: Optional[Sequence[str]] = None,
    distortions: Optional[Sequence[str]] = None,
    size: int = DEFAULT_SIZE,
    num_workers: Optional[int] = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Build the pseudo-labelled built-in data set (or find it already built) and return its folder.

    Args:
        root: the folder to build into. Default: ``default_builtin_root() / "builtin-v1"`` for the default
            options, and ``builtin-v1-<hash of the options>`` next to it for any other options.
        seed: seed of the random parts of the distortions.
        scenes: a subset of the scene names of :data:`SOURCES` (default: all whose package is installed).
        distortions: a subset of :data:`DISTORTIONS` (default: all).
        size: side of the square images, at least 224.
        num_workers: processes for the build (default: the number of CPUs, at most 8; 1 builds in this process).
        progress: show a tqdm progress bar.
        force: rebuild even if a complete build is present.

    The folder holds ``images/*.png``, ``reference/*.png``, ``labels.csv`` (image, ref, distortion, level,
    pseudo_mos, ssim), ``LICENSES.md``, ``README.md`` and ``COMPLETE.json`` (the options and counts; written last).
    """
    if size < 224:
        raise ValueError("size must be at least 224 (the model's fragment grid needs 224x224)")
    available = {source.scene: source for source in SOURCES if source_path(source) is not None}
    missing = [source.scene for source in SOURCES if source.scene not in available]
    if scenes is None:
        if missing:
            logger.warning("photographs not found in the installed packages, left out: %s (%s installs them)",
                           missing, BUILDER_EXTRA)
        chosen = [source for source in SOURCES if source.scene in available]
    else:
        unknown = [s for s in scenes if s not in available]
        if unknown:
            raise ValueError(f"unknown or unavailable scene(s) {unknown}; available: {sorted(available)}")
        chosen = [available[s] for s in scenes]
    distortion_names = list(DISTORTIONS) if distortions is None else list(distortions)
    unknown = [d for d in distortion_names if d not in DISTORTIONS]
    if unknown:
        raise ValueError(f"unknown distortion(s) {unknown}; known: {list(DISTORTIONS)}")
    if len(chosen) < 2:
        if scenes is None:  # the packages that hold the photographs are not installed
            require_builder_packages()
            raise ImportError(f"the built-in data set needs the photographs of scikit-image, scikit-learn and sporco, "
                              f"which are not installed: {BUILDER_EXTRA}")
        raise ValueError("the built-in data set needs at least two scenes")
    params = _params(seed, size, [s.scene for s in chosen], distortion_names)

    if root is None:
        default = _params(3407, DEFAULT_SIZE, [s.scene for s in SOURCES if s.scene in available], list(DISTORTIONS))
        name = f"builtin-v{BUILTIN_VERSION}"
        if params != default:
            name += "-" + hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        root = default_builtin_root() / name
    root = Path(root).expanduser().absolute()
    if not force and _is_complete(root, params):
        return root
    if root.exists():
        if not (root / MARKER).is_file():
            raise IQADataError(
                "folder exists but is not a built-in data set build (no COMPLETE.json); remove it or choose another root",
                file=root,
            )
        logger.info("removing incomplete or outdated built-in data set at %s", root)
        shutil.rmtree(root)

    require_builder_packages()
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-{os.getpid()}-", dir=root.parent))
    try:
        started = time.perf_counter()
        (partial / "images").mkdir()
        (partial / "reference").mkdir()
        paths = {source.scene: source_path(source) for source in chosen}
        for source in chosen:
            prepare_reference(paths[source.scene], size).save(partial / "reference" / f"{source.scene}.png", "PNG")
        jobs = [(str(partial), s.scene, d, seed) for s in chosen for d in distortion_names]
        rows = _run_jobs(jobs, num_workers, progress)
        rows.sort(key=lambda row: row["image"])
        with open(partial / LABELS, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        _write_licenses(partial, chosen, paths)
        _write_readme(partial, params, len(rows))
        marker = {"params": params, "num_images": len(rows), "build_seconds": round(time.perf_counter() - started, 1),
                  "label": "pseudo-MOS = 1 + 4 * SSIM (pseudo-labelled, not human-rated)"}
        (partial / MARKER).write_text(json.dumps(marker, indent=2))
        try:
            os.rename(partial, root)
        except OSError:
            if not _is_complete(root, params):  # another process finished first; anything else is an error
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return root


def _run_jobs(jobs: List[tuple], num_workers: Optional[int], progress: bool) -> List[dict]:
    from tqdm.auto import tqdm

    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(jobs) * NUM_LEVELS, desc="building built-in IQA set (pseudo-labelled)", unit="img",
               disable=not progress)
    rows: List[dict] = []
    try:
        if num_workers <= 1:
            for job in jobs:
                rows += _distort_scene(job)
                bar.update(NUM_LEVELS)
        else:
            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                for result in pool.map(_distort_scene, jobs, chunksize=1):
                    rows += result
                    bar.update(NUM_LEVELS)
    finally:
        bar.close()
    return rows


def load_builtin_dataset(root: Optional[PathLike] = None, **build_options):
    """The built-in data set as a ``datasets.Dataset`` (building it first if needed).

    Columns: image, mos (the pseudo-MOS, 1-5), mos_original (the same number), ref (scene), dataset
    (``"builtin"``), distortion, level. ``build_options`` go to :func:`build_builtin_dataset`.
    """
    from ._tables import LabelRow, parse_score, read_table, to_dataset
    from .scales import get_score_scale

    folder = build_builtin_dataset(root, **build_options)
    label_path = folder / LABELS
    spec = {column: (column,) for column in ("image", "ref", "distortion", "level", "pseudo_mos")}
    rows = []
    for row, cells in read_table(label_path, spec):
        path = folder / cells["image"]
        if not path.is_file():
            raise IQADataError(f"image {cells['image']!r} named here does not exist", file=label_path, row=row)
        rows.append(LabelRow(str(path), parse_score(cells["pseudo_mos"], label_path, row, "pseudo_mos"), cells["ref"],
                             row, {"distortion": cells["distortion"], "level": int(cells["level"])}))
    return to_dataset(rows, get_score_scale("builtin"), label_path, extra_columns=("distortion", "level"))
