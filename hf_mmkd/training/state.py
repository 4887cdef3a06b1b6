"""`RunState`: what one run of the main job carries from its preparation (`job.prepare_data`,
`job.prepare_models`) through its stages (`stages`), instead of a long list of arguments passed from hand to hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_mmkd.data.spec import DatasetSpec
from hf_mmkd.io import OutputFolder
from hf_mmkd.trainer import MMKDTrainingArguments
from hf_mmkd.training.arguments import DataArguments, ModelArguments, StageArguments


@dataclass
class RunState:
    """One run: its argument groups, the stages it runs, its data and models, its guarded folders, its results.

    Filled in the order a run meets them: the plan (`job.plan_run`: arguments, stages, `say`, the teacher's folder),
    the data (`job.prepare_data`), the models' preprocessors and the provenance record (`job.prepare_models`), the
    folders' guards (`job.run_locked`), and the results of each stage (`stages`).
    """

    model_args: ModelArguments
    data_args: DataArguments
    stage: StageArguments
    args: MMKDTrainingArguments
    say: Callable[..., None]  # the normal output (print on the main process): what runs and what is skipped
    teacher_dir: Path  # where the teacher is read from or written to
    teacher_stage: bool  # this run trains (or reuses) a teacher
    student_stage: bool  # this run trains a student
    needs_teacher: bool  # the method distils from a separate teacher (frozen or online)
    # the data (job.prepare_data)
    splits: dict = field(default_factory=dict)
    spec: DatasetSpec | None = None
    fingerprint: str | None = None  # of the whole train split, for the teacher's provenance record
    config_kwargs: dict = field(default_factory=dict)  # MMKDConfig keyword arguments of both models
    compute_metrics: Callable | None = None
    # the models (job.prepare_models)
    tokenizer: Any = None
    feature_extractor: Any = None
    image_processor: Any = None
    teacher_tokenizer: Any = None  # the teacher's own, when it has its own text backbone; else `tokenizer`
    record: dict = field(default_factory=dict)  # the teacher's provenance record (hf_mmkd.provenance)
    student_kwargs: dict = field(default_factory=dict)
    # the folders (job.run_locked)
    guard: OutputFolder | None = None
    teacher_guard: OutputFolder | None = None
    # the stages (stages.run_stages)
    train_labels: Any = None  # the train labels, when the head's bias starts from them
    results: dict = field(default_factory=dict)  # validation metrics of each stage (results.json)

    @property
    def root(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def main_process(self) -> bool:
        return self.args.process_index == 0

    @property
    def rates(self) -> list[float]:
        return self.stage.rates

    def fold_dir(self, k: int) -> Path:
        """The folder of the k-th cross-fitted teacher (`--teacher_folds`)."""
        return self.teacher_dir / "folds" / f"fold_{k}"

    def record_outputs(self, folder_guard: OutputFolder, *names: str) -> None:
        """Record `names` as written by this run in `folder_guard`'s folder (the main process writes there)."""
        if self.main_process:
            folder_guard.record(*names)
