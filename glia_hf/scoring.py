"""Scoring at scale: `glia-iqa score --output FILE` split across processes, crash-safe and resumable.

    accelerate launch --multi_gpu --num_processes 2 -m glia_hf.cli score photos/ --model DIR --output scores.csv
    glia-iqa score photos/ --model DIR --output scores.csv --resume        # after an interruption, any process count

Work split: the files still to score are cut into one contiguous chunk per process
(`accelerate.PartialState.split_between_processes`); each process scores its chunk in batches with the same
`glia_hf.cli.score_files` as a one-process run, and a score does not depend on its batch (the batch guarantee), so the
output equals a one-process run's.

Crash safety. While it runs, each process appends its rows to its own *shard*, a JSON-lines file in
``FILE.parts/`` (``attempt-A-rank-R.jsonl``: one ``{"path", "score", "status", "error"}`` object a line), and after
every batch it flushes and fsyncs that file. A stop at any moment (Ctrl-C, SIGKILL, a lost machine) therefore leaves
every finished batch on disk, and at most one half-written last line per shard, which is ignored when read (a line
counts only when it ends with a newline and parses). When every process is done, the main process merges the rows of
the previous output (with ``--resume``) and of all shards, keyed by path, writes them in input order to a temporary
file beside FILE, fsyncs it and renames it over FILE (an atomic replace), then deletes ``FILE.parts/``. So FILE is
either the old complete file or the new complete file, never half of one.

Resume (``--resume``): the rows already scored (status ``ok``) in FILE and in ``FILE.parts/`` are kept and their files
are skipped; failed rows are tried again (a file repaired since then gets its score). Each row is keyed by its path, so
no row is lost or written twice, whatever the number of processes before and after. ``FILE.parts/run.json`` records
the model, views, seed and pixel limit, and a resume with different ones is refused (for a JSON output, its header is
checked too; a CSV output carries no header, so do not resume a CSV made with other settings). Without ``--resume`` a
stale ``FILE.parts/`` is deleted and everything is scored again.

Test hook: the environment variable ``GLIA_IQA_STOP_AFTER_BATCHES=N`` makes every process exit abruptly (``os._exit``,
no clean-up, as a kill would) once every process has its N-th batch on disk (or its last one, if its chunk is
shorter). It exists so the tests can interrupt a run half-way at a known point; it has no other use.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

PARTS_SUFFIX = ".parts"
RUN_FILE = "run.json"
STOP_AFTER_ENV = "GLIA_IQA_STOP_AFTER_BATCHES"
STOP_EXIT_CODE = 75
#: Settings that change scores: a resume must use the same ones.
RUN_KEYS = ("model", "num_samples", "seed", "max_pixels")


class _SingleProcess:
    """The part of `accelerate.PartialState` used here, for one process (no accelerate needed)."""

    num_processes, process_index, local_process_index, is_main_process = 1, 0, 0, True

    def wait_for_everyone(self):
        pass

    def split_between_processes(self, items):
        from contextlib import nullcontext

        return nullcontext(items)


def process_state():
    """The process group this command runs in: Accelerate's `PartialState` when launched on several processes.

    `accelerate launch --multi_gpu --num_processes N` (torchrun) starts N processes also on a machine without a GPU;
    they are then joined over gloo on the CPU (as the trainer does). A run on one process needs no Accelerate and
    uses none.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:  # one process: no process group, and no global Accelerate state set up as a side effect
        return _SingleProcess()
    try:
        from accelerate import PartialState
    except ImportError:
        from glia_hf.cli import UsageError

        raise UsageError("scoring on several processes needs accelerate: pip install accelerate") from None
    import torch

    return PartialState(cpu=not torch.cuda.is_available())


def parts_dir(output: str | os.PathLike) -> Path:
    """The folder of the per-process shards of `output` while a run is in progress."""
    return Path(str(output) + PARTS_SUFFIX)


def _record(row: dict):
    from glia_hf.cli import ScoreRecord

    score = row.get("score")
    return ScoreRecord(
        str(row["path"]),
        None if score in (None, "") else float(score),
        str(row.get("status") or "ok"),
        row.get("error") or None,
    )


def read_shard(path: str | os.PathLike) -> list:
    """The complete rows of one shard; a half-written last line (a run stopped mid-write) is left out."""
    records = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if not line.endswith("\n"):
                break
            try:
                records.append(_record(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                break
    return records


def read_output(path: str | os.PathLike | None) -> tuple[list, dict]:
    """The rows (and, for JSON, the header) of a finished `glia-iqa score` output file; nothing if it does not exist."""
    if path is None or not Path(path).is_file():
        return [], {}
    path = Path(path)
    if path.suffix.lower() == ".json":
        document = json.loads(path.read_text(encoding="utf-8"))
        return [_record(row) for row in document.get("results", [])], document
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            from glia_hf.cli import UsageError

            raise UsageError(f"--resume: {path} is not a glia-iqa score CSV (no 'path' column)")
        return [_record(row) for row in reader], {}


def _shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("attempt-*-rank-*.jsonl")) if folder.is_dir() else []


def _attempt_of(shard: Path) -> int:
    return int(shard.name.split("-")[1])


def collect_done(output, folder: Path) -> dict:
    """Path -> record of every row on disk: the finished `output` (if given) first, then the shards in attempt order."""
    done = {}
    for record in read_output(output)[0]:
        done[record.path] = record
    for shard in _shards(folder):
        for record in read_shard(shard):
            done[record.path] = record
    return done


def _check_same_run(settings: dict, folder: Path, header: dict, output) -> None:
    from glia_hf.cli import UsageError

    previous = {}
    run_file = folder / RUN_FILE
    if run_file.is_file():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    elif header:
        previous = {key: header[key] for key in RUN_KEYS if key in header}
    changed = [key for key in RUN_KEYS if key in previous and previous[key] != settings[key]]
    if changed:
        detail = ", ".join(f"{key}: {previous[key]!r} then, {settings[key]!r} now" for key in changed)
        raise UsageError(f"--resume: {output} was made with other settings ({detail}); use the same ones or drop --resume")


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename itself is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(path: str | os.PathLike, write) -> None:
    """Write a file through `write(stream)` into a temporary file beside it, fsync it, and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_dir(path.parent)


class _resume_hint:
    """On Ctrl-C, say where the rows scored so far are and how to continue (then let the interrupt through)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is KeyboardInterrupt:
            print(f"glia-iqa: interrupted; the rows scored so far are saved in {self.folder}; run the same command "
                  "with --resume to continue", file=sys.stderr)
        return False


def score_to_file(files, missing, network, processor, output, metadata, *, resume=False, batch_size=8,
                  num_samples=None, seed=None, max_pixels=None, progress=True, report=None, state=None):
    """Score `files` on every process of `state` into `output` (CSV or JSON), crash-safe and resumable.

    Args:
        files: the image files, in output order (as `glia_hf.cli.expand_paths` gives them).
        missing: the records of arguments that matched nothing; they head the output, as in a one-process run.
        network, processor: the model (on this process's device) and its image processor.
        output: the output file; its extension (.csv or .json) picks the format.
        metadata: the JSON header (model, score scale, views, seed); its `model`, `num_samples` and `seed` and the
            pixel limit must match on `resume`.
        resume: keep the rows already scored in `output` and `output.parts/`, and score only the rest.
        state: the process group (`process_state()`); one process when `None`.

    Returns:
        On the main process, every record in output order (`missing` first); on the others, `None`.
    """
    from tqdm.auto import tqdm

    from glia_hf.cli import score_files, write_csv, write_json

    state = state or _SingleProcess()
    folder = parts_dir(output)
    settings = {"model": metadata.get("model"), "num_samples": num_samples, "seed": seed, "max_pixels": max_pixels}
    # Every process reads the state on disk before anyone writes, so they all agree on what is left to do.
    if resume:
        _check_same_run(settings, folder, read_output(output)[1], output)
        done = {path: r for path, r in collect_done(output, folder).items() if r.status == "ok"}
        attempt = max((_attempt_of(s) for s in _shards(folder)), default=-1) + 1
    else:
        done, attempt = {}, 0
    todo = [path for path in files if path not in done]
    state.wait_for_everyone()
    if state.is_main_process:
        if not resume and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / RUN_FILE).is_file():
            write_atomically(folder / RUN_FILE, lambda stream: json.dump(settings, stream))
    state.wait_for_everyone()

    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)
    if stop_after:  # every process must reach the stop, so stop at the shortest chunk's last batch at the latest
        shortest = len(todo) // state.num_processes
        stop_after = min(stop_after, -(-shortest // batch_size))
    shard = folder / f"attempt-{attempt:04d}-rank-{state.process_index:05d}.jsonl"
    with state.split_between_processes(todo) as mine, open(shard, "a", encoding="utf-8") as stream:
        show = progress and state.is_main_process
        with tqdm(total=len(mine), unit="image", desc="Scoring", disable=not show, file=sys.stderr) as bar, \
                _resume_hint(folder):
            for number, start in enumerate(range(0, len(mine), batch_size), start=1):
                records = score_files(
                    mine[start : start + batch_size], network, processor, batch_size=batch_size,
                    num_samples=num_samples, seed=seed, max_pixels=max_pixels, progress=False, report=report,
                )
                for record in records:
                    stream.write(json.dumps({"path": record.path, "score": record.score, "status": record.status,
                                             "error": record.error}) + "\n")
                stream.flush()
                os.fsync(stream.fileno())
                bar.update(len(records))
                if number == stop_after:  # test hook: all processes stop here, as a kill would, nothing cleaned up
                    state.wait_for_everyone()
                    os._exit(STOP_EXIT_CODE)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None

    scored = collect_done(output if resume else None, folder)
    lost = [path for path in files if path not in scored]
    if lost:  # cannot happen unless a shard was removed by hand; never write an output with holes
        raise RuntimeError(f"{len(lost)} file(s) have no row in {folder} (first: {lost[0]}); run again with --resume")
    records = list(missing) + [scored[path] for path in files]
    if str(output).lower().endswith(".json"):
        write_atomically(output, lambda stream: write_json(records, stream, metadata))
    else:
        write_atomically(output, lambda stream: write_csv(records, stream))
    shutil.rmtree(folder, ignore_errors=True)
    return records
