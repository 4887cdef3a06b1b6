"""Resuming a stage: complete checkpoints, the checkpoint each stage resumes from, and the checks that a
`--resume_from_checkpoint PATH` is this run's own and its stage's.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hf_mmkd.inference import safetensors_shapes
from hf_mmkd.io import (
    read_json,
)
from hf_mmkd.trainer import MMKDTrainingArguments
from hf_mmkd.training.arguments import StageArguments

logger = logging.getLogger("hf_mmkd")


def checkpoint_is_complete(folder: Path) -> bool:
    """The Trainer writes `trainer_state.json` last into checkpoint-N; a save cut short lacks it (or has it cut)."""
    try:
        json.loads((Path(folder) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(stage_dir: Path) -> str | None:
    """The newest checkpoint-N of a stage whose save finished; incomplete ones (a kill mid-save) are skipped."""
    if not stage_dir.is_dir():
        return None
    steps = sorted((int(p.name.split("-")[1]), p) for p in stage_dir.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for _, folder in reversed(steps):
        if checkpoint_is_complete(folder):
            return str(folder)
        logger.warning("skipping incomplete checkpoint %s (no readable trainer_state.json)", folder)
    return None


_RESUME_OFF = (None, False, "False", "false", "")


_RESUME_LAST = (True, "True", "true")


def _same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def resume_stage_dirs(root: Path, stage: StageArguments, args: MMKDTrainingArguments, teacher_stage: bool,
                      student_stage: bool) -> dict[Path, tuple[str, str | None]]:
    """`{stage folder: (role, method)}` of the stages this run trains: the folders whose checkpoint-N it may resume
    from (the teacher's `teacher_run`, its folds' `teacher_run/fold_k`, the student's `student_run`), with the role
    and distillation method that the models saved in their checkpoints carry."""
    dirs: dict[Path, tuple[str, str | None]] = {}
    if teacher_stage:
        dirs[root / "teacher_run"] = ("teacher", None)
        dirs.update({root / "teacher_run" / f"fold_{k}": ("teacher", None) for k in range(stage.teacher_folds)})
    if student_stage:
        dirs[root / "student_run"] = ("student", args.method)
    return dirs


def check_resume_path(args: MMKDTrainingArguments, stage_dirs: dict[Path, tuple[str, str | None]]) -> None:
    """An explicit `--resume_from_checkpoint PATH` must be a checkpoint-N folder of this run's own stage folders
    (`resume_stage_dirs`), checked before anything is read or written: a checkpoint of another run (another
    `--output_dir`) would be resumed as if it were this run's, its step count, optimiser and weights included."""
    value = args.resume_from_checkpoint
    if value in _RESUME_OFF or value in _RESUME_LAST:
        return
    for stage_dir, (role, method) in stage_dirs.items():
        if _same_folder(Path(value).parent, stage_dir):
            check_resume_checkpoint(value, role, method)
            return
    shown = [d for d in stage_dirs if d.name in ("teacher_run", "student_run")]
    raise ValueError(f"--resume_from_checkpoint {value} is not a checkpoint of this run: expected a checkpoint-N "
                     f"folder in {' or '.join(map(str, shown))} (--output_dir {args.output_dir}); resume another run "
                     "with its own --output_dir, or pass 'true' to resume from this run's last checkpoint")


def check_resume_checkpoint(value: str, role: str, method: str | None) -> None:
    """A checkpoint to resume from is complete, its weight files are readable (a truncated one is named), and its
    model is the stage's: the `role` and distillation `method` recorded in the config of the model it holds."""
    if not checkpoint_is_complete(Path(value)):
        raise ValueError(f"--resume_from_checkpoint {value} is not a complete Trainer checkpoint "
                         "(no readable trainer_state.json); pass 'true' to resume from the last complete one")
    for path in sorted(Path(value).rglob("*.safetensors")):
        try:
            safetensors_shapes(path)
        except ValueError as err:
            raise ValueError(f"--resume_from_checkpoint {value}: {err}; resume from another checkpoint or start over "
                             "(--resume_from_checkpoint false)") from None
    configs = sorted(Path(value).glob("student*/config.json"))  # student/, or student_<pattern>/ per pattern
    if configs:
        config = read_json(configs[0])
        saved = (config.get("role"), config.get("distillation_method"))
        if saved != (role, method):
            raise ValueError(f"--resume_from_checkpoint {value} was written by {_stage_name(*saved)}, but this stage "
                             f"is {_stage_name(role, method)}: resume with the arguments that wrote it, or start over "
                             "(--resume_from_checkpoint false)")


def _stage_name(role: str | None, method: str | None) -> str:
    return "the teacher stage" if role == "teacher" else f"a student stage of method {method!r}"


def resume_point(args: MMKDTrainingArguments, stage_dir: Path, role: str, method: str | None = None) -> str | None:
    """The checkpoint the stage in `stage_dir` resumes from, or None (a fresh start). `--resume_from_checkpoint true`
    means the stage's last complete checkpoint, if it has one; a PATH resumes only the stage whose folder holds it
    (`check_resume_path` has refused any other PATH), the run's other stages start afresh. The checkpoint is
    checked by `check_resume_checkpoint`."""
    value = args.resume_from_checkpoint
    if value in _RESUME_OFF:
        return None
    if value in _RESUME_LAST:
        value = last_complete_checkpoint(stage_dir)
        if value is None:
            return None
    elif not _same_folder(Path(value).parent, stage_dir):
        return None
    check_resume_checkpoint(value, role, method)
    return value
