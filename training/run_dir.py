"""The run directory (``output.dir``) between invocations: reusing a finished run, refusing one of another recipe,
checking a ``--resume``, and, after a failure, what was kept and the command that continues it.

What a run directory holds is described in ``training/README.md``; an epoch state is complete when its folder holds
:data:`STATE_MARKER`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from training.config import RUN_CONTROL_FIELDS, ConfigError, TrainConfig, config_from_dict, load_config

#: The file that marks an epoch state folder (``checkpoints/split-K/epoch-E``) as completely written.
STATE_MARKER = "STATE_COMPLETE"


def resolve_config(args, overrides) -> TrainConfig:
    """The config of this invocation: ``--config`` files and dotted overrides, or, for ``--resume RUN_DIR`` without
    ``--config``, the run directory's saved ``config.yaml`` (whose ``output.dir`` becomes RUN_DIR)."""
    config_path = args.config
    if not config_path and isinstance(args.resume, str):
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume}: no run there (no config.yaml); give the run directory of an "
                              "interrupted run, or start the run without --resume")
        config_path = [str(saved)]
    config = load_config(config_path, overrides)
    if isinstance(args.resume, str):
        # The run directory named on the command line wins over the one in the config.
        values = config.to_dict()
        values["output"]["dir"] = args.resume
        config = config_from_dict(values)
    return config


def _recipe(values: dict) -> dict:
    return {section: {k: v for k, v in fields.items() if (section, k) not in RUN_CONTROL_FIELDS}
            for section, fields in values.items()}


def recipe_differences(previous: dict, current: dict) -> List[str]:
    """The recipe fields (not the run-control ones) in which two configs differ, as ``"optim.lr (0.0003 -> 0.001)"``."""
    before, after = _recipe(previous), _recipe(current)
    changed = []
    for section, fields in after.items():
        for key, value in fields.items():
            old = before.get(section, {}).get(key)
            if old != value:
                changed.append(f"{section}.{key} ({json.dumps(old, default=str)} -> {json.dumps(value, default=str)})")
    return changed


@dataclass
class ExistingRun:
    """What a run directory holds, measured against the config of a new invocation.

    ``kind``: ``none`` (no run yet), ``finished`` (this recipe, every requested split done), ``unfinished`` (this
    recipe, some split not done) or ``different`` (another recipe; ``differences`` names the fields).
    """

    kind: str
    differences: List[str]
    results: Optional[Path] = None


def _read_saved_config(saved: Path) -> dict:
    import yaml

    try:
        return config_from_dict(yaml.safe_load(saved.read_text())).to_dict()
    except (ConfigError, yaml.YAMLError) as error:
        raise ConfigError(f"{saved} is not a config this version can read ({error}); choose another --output.dir, "
                          "or set --output.overwrite true to replace the run") from None


def _requested_splits(config: TrainConfig, run_dir: Path) -> Optional[List[int]]:
    """The split indices this invocation would run, or ``None`` when the splits file does not exist yet."""
    chosen = config.data.splits
    if chosen != "all":
        return [chosen] if isinstance(chosen, int) else list(chosen)
    splits_file = Path(config.data.splits_file) if config.data.splits_file else run_dir / "splits.json"
    try:
        return list(range(len(json.loads(splits_file.read_text())["splits"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_run_dir(config: TrainConfig, run_dir: Path) -> ExistingRun:
    """Whether ``run_dir`` holds a run, and whether it is a finished or unfinished run of ``config``'s recipe."""
    saved = run_dir / "config.yaml"
    if not saved.is_file() or not (any(run_dir.glob("split-*")) or (run_dir / "checkpoints").exists()):
        return ExistingRun("none", [])
    differences = recipe_differences(_read_saved_config(saved), config.to_dict())
    if differences:
        return ExistingRun("different", differences)
    results = run_dir / "results.json"
    requested = _requested_splits(config, run_dir)
    done = results.is_file() and requested is not None and all(
        (run_dir / f"split-{k}" / "result.json").is_file() for k in requested)
    return ExistingRun("finished" if done else "unfinished", [], results if done else None)


def reuse_finished_run(run_dir: Path, existing: ExistingRun) -> dict:
    """The saved ``results.json`` of a finished run of this recipe (with ``"reused": True``), after saying on the
    main process that nothing is trained and where the model is."""
    payload = json.loads(existing.results.read_text())
    models = [p for p in sorted(run_dir.glob("split-*/model")) if p.is_dir()]
    if _is_main_rank():
        where = f"model in {_shown(models[0])}" if len(models) == 1 else (
            f"models in {_shown(run_dir)}/split-*/model" if models else "no model was saved")
        print(f"{_shown(run_dir)} already holds this finished run; reusing it, nothing is trained ({where}; "
              "--output.overwrite true trains again)", flush=True)
    payload["reused"] = True
    return payload


def refuse_existing_run(run_dir: Path, existing: ExistingRun) -> None:
    """Raise the :class:`ConfigError` for a directory that holds another recipe's run or an unfinished one."""
    if existing.kind == "different":
        raise ConfigError(
            f"{_shown(run_dir)} holds a run of another recipe (it differs in {', '.join(existing.differences)}); "
            "choose another --output.dir, or set --output.overwrite true to replace that run"
        )
    if existing.kind == "unfinished":
        raise ConfigError(
            f"{_shown(run_dir)} holds an unfinished run of this recipe; continue it with: {resume_command(run_dir)} "
            "(or set --output.overwrite true to start it again)"
        )
    raise ConfigError(f"{_shown(run_dir)} holds a finished run of this recipe; set --output.overwrite true to train "
                      "it again")


def prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Check the run directory against ``--resume`` / ``output.overwrite``; write the resolved config.

    Without ``--resume`` a directory that holds a run is only reused for a new one with ``output.overwrite`` (its
    splits, states and results are deleted first); an unfinished run of the same recipe is an error that says to
    continue it with ``--resume``, and a run of another recipe is an error that names the fields that differ. (A
    finished run of the same recipe never gets here: :func:`main` reuses it.)
    """
    saved = run_dir / "config.yaml"
    if resume:
        if not saved.is_file():
            raise ConfigError(f"--resume: {run_dir} holds no run (no config.yaml); start it without --resume")
        changed = recipe_differences(_read_saved_config(saved), config.to_dict())
        if changed:
            raise ConfigError(f"--resume: the config differs from the interrupted run's in {', '.join(changed)}; a "
                              "resumed run must use the same recipe")
        saved.write_text(config.to_yaml())  # run-control fields (splits to run, trackers, ...) may have changed
        return
    existing = describe_run_dir(config, run_dir)
    if existing.kind != "none":
        if not config.output.overwrite:
            refuse_existing_run(run_dir, existing)
        for path in list(run_dir.glob("split-*")) + [run_dir / "checkpoints"]:
            shutil.rmtree(path, ignore_errors=True)
        for name in ("results.json", "results.md", "results.csv"):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(config.to_yaml())


# ----------------------------------------------------------------------------------------- after a failure


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (shorter to read and to paste)."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in ``run_dir`` (its ``config.yaml`` holds the recipe).

    Launched by ``accelerate launch``, the launcher's process flags are repeated (``--cpu``, the number of
    processes); run as a plain script, it is ``python training/train.py``.
    """
    import shlex

    script = shlex.quote(_shown(Path(__file__).with_name("train.py")))
    tail = f"{script} --resume {shlex.quote(_shown(run_dir))}"
    if "ACCELERATE_USE_CPU" not in os.environ and "LOCAL_RANK" not in os.environ:
        return f"python {tail}"
    flags = ["--cpu"] if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" else []
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    flags += (["--multi_gpu"] if processes > 1 else []) + ["--num_processes", str(processes)]
    return " ".join(["accelerate launch", *flags, tail])


def _finished_splits(run_dir: Path) -> List[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in run_dir.glob("split-*/result.json"))


def _saved_states(run_dir: Path) -> Dict[int, int]:
    """``{split: newest epoch}`` of the complete epoch states in ``run_dir/checkpoints``."""
    states: Dict[int, int] = {}
    for marker in run_dir.glob(f"checkpoints/split-*/epoch-*/{STATE_MARKER}"):
        split, epoch = int(marker.parent.parent.name.split("-")[1]), int(marker.parent.name.split("-")[1])
        states[split] = max(states.get(split, 0), epoch)
    return states


def resumable(run_dir: Path) -> bool:
    """Whether ``--resume`` would reuse anything in ``run_dir``: a finished split or a complete epoch state."""
    return bool(_finished_splits(run_dir) or _saved_states(run_dir))


def kept_summary(run_dir: Path) -> str:
    """What an interrupted run leaves for ``--resume``, e.g. "split 0 finished; the state of split 1 after epoch 2"."""
    parts = []
    finished = _finished_splits(run_dir)
    if finished:
        parts.append(f"split{'s' if len(finished) > 1 else ''} {', '.join(map(str, finished))} finished")
    for split, epoch in sorted(_saved_states(run_dir).items()):
        if split not in finished:
            parts.append(f"the state of split {split} after its epoch {epoch} (the last finished one)")
    return "; ".join(parts)


class RunDirGuard:
    """Remembers what existed of a run directory before this invocation, and removes what it added when the run
    fails before leaving anything ``--resume`` can use.

    Nothing that existed before is ever deleted: not the directory, not its entries, not the parents of a new one.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.existed = run_dir.is_dir()
        self.entries = {p.name for p in run_dir.iterdir()} if self.existed else set()
        self.new_parents = []  # the parents that this invocation will create, outermost first
        parent = run_dir.parent
        while not parent.exists():
            self.new_parents.insert(0, parent)
            parent = parent.parent

    def clean_up(self) -> bool:
        """Remove what this invocation added, unless the directory can be resumed; whether anything was removed."""
        if not self.run_dir.is_dir() or resumable(self.run_dir):
            return False
        if self.existed:
            added = [p for p in self.run_dir.iterdir() if p.name not in self.entries]
            for path in added:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            return bool(added)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for parent in reversed(self.new_parents):
            try:
                parent.rmdir()  # only if empty: something else may have been put there meanwhile
            except OSError:
                break
        return True


def failure_message(run_dir: Path, cleaned: bool) -> str:
    """The end of the one-line message after an interrupted or failed run: what was kept and how to continue."""
    kept = kept_summary(run_dir) if run_dir.is_dir() else ""
    if kept:
        return f"kept {kept} in {_shown(run_dir)}; continue with: {resume_command(run_dir)}"
    if cleaned:
        return f"no epoch had finished, so nothing was kept (removed what this run had written to {_shown(run_dir)})"
    return "no epoch had finished, so there is nothing to resume"


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
