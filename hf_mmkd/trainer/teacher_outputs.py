"""A frozen teacher's outputs: computed once per training row before training and cached on the CPU
(`cache_teacher_outputs`), from the cross-fitted fold teachers where there are some (`--teacher_folds`)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from hf_mmkd.data.missing import model_inputs, teacher_view
from hf_mmkd.trainer.wrapper import OUTPUT_FIELDS, _Output, select_rows

logger = logging.getLogger("hf_mmkd.trainer")


class TeacherOutputCache:
    """Per-row outputs of a frozen teacher on complete inputs, kept on the CPU.

    Rows are keyed by `row_key` (the collator's stable hash of the row id). Per-step sequences are stored trimmed to the
    row's valid length and padded again when a batch is assembled.
    """

    def __init__(self):
        self.rows: dict[int, dict] = {}
        self.computed = 0  # rows this process ran the teacher on (a share of them under several processes)

    def lookup(self, index: torch.Tensor, device) -> _Output | None:
        keys = index.tolist()
        if not all(k in self.rows for k in keys):
            return None
        out = {}
        for name in OUTPUT_FIELDS:
            values = [self.rows[k].get(name) for k in keys]
            if values[0] is None:
                out[name] = None
            elif name.endswith(("_sequence", "_step_mask")):
                length = max(v.shape[0] for v in values)
                out[name] = torch.stack([nn.functional.pad(v, (0, 0) * (v.ndim - 1) + (0, length - v.shape[0]))
                                         for v in values]).to(device)
            else:
                out[name] = torch.stack(values).to(device)
        return _Output(out)

    def store(self, index: torch.Tensor, output) -> None:
        for row, key in enumerate(index.tolist()):
            entry = {}
            for name in OUTPUT_FIELDS:
                value = getattr(output, name, None)
                if value is None:
                    continue
                value = value[row].detach().cpu()
                if name.endswith(("_sequence", "_step_mask")):
                    mask = getattr(output, name.rsplit("_", 2)[0] + "_step_mask")[row]
                    value = value[: int(mask.nonzero().max()) + 1 if mask.any() else 1]
                entry[name] = value
            self.rows[key] = entry


class FrozenTeacherOutputs:
    """MMKDTrainer's teacher outputs (a mixin: the methods read and write the trainer's own state)."""

    def fill_teacher_cache(self) -> None:
        """Run the frozen teacher once over the training set, in order, before training.

        With cross-fitted `fold_teachers` (K of them, fold k trained on every training row whose `row_key % K != k`),
        each row's cached logits come from the fold teacher that did not train on it (out-of-fold); the
        representations stay the full teacher's, one space for every row (the fold teachers' spaces differ).

        The cached values then do not depend on which batch a row first appeared in (the last bits of a forward
        pass depend on the batch's shape), so a resumed run, which refills the cache, matches exactly.

        With several processes, process k runs the teacher on rows k, k + N, k + 2N, ... only and the processes
        then exchange their outputs: each row is computed once in the whole job, and every process holds every
        row once (`TeacherOutputCache.computed` counts the rows this process computed).
        """
        if self._teacher_cache is None or self.train_dataset is None or self._teacher_cache.rows:
            return
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        share = self.train_dataset if world == 1 else torch.utils.data.Subset(
            self.train_dataset, range(rank, len(self.train_dataset), world))
        loader = torch.utils.data.DataLoader(share, batch_size=self.args.per_device_eval_batch_size,
                                             shuffle=False, collate_fn=self.data_collator)
        folds = [self.accelerator.prepare_model(f, evaluation_mode=True) for f in self._fold_teachers]
        for batch in loader:
            if "row_key" not in batch:
                raise ValueError("cache_teacher_outputs needs row keys: build the collator with return_row_keys=True")
            batch = teacher_view(self._prepare_inputs(batch))
            with torch.no_grad():
                out = self._frozen_teacher(**model_inputs(batch))
                if folds:  # cross-fitting: each row's response from the fold teacher that never trained on it
                    out = _Output({name: getattr(out, name, None) for name in OUTPUT_FIELDS})
                    fold_of = batch["row_key"] % len(folds)  # (B,) the fold each row belongs to (training/stages.py)
                    for k, teacher in enumerate(folds):
                        rows = fold_of == k
                        if bool(rows.any()):
                            out["logits"] = out["logits"].index_copy(
                                0, rows.nonzero().squeeze(1), teacher(**model_inputs(select_rows(batch, rows))).logits)
                self._teacher_cache.store(batch["row_key"], out)
        self._teacher_cache.computed = len(self._teacher_cache.rows)
        if world > 1:
            from accelerate.utils import gather_object

            for part in gather_object([self._teacher_cache.rows]):
                self._teacher_cache.rows.update(part)
        logger.info("teacher outputs cached: %d training rows held, %d computed by process %d of %d",
                    len(self._teacher_cache.rows), self._teacher_cache.computed, rank, world)

    def _frozen_teacher_outputs(self, inputs: dict, train: bool):
        index = inputs.get("row_key")
        use_cache = train and self._teacher_cache is not None and index is not None
        if use_cache:
            cached = self._teacher_cache.lookup(index, inputs["modality_mask"].device)
            if cached is not None:
                return cached
        with torch.no_grad():
            out = self._frozen_teacher(**model_inputs(inputs))
        if use_cache:
            self._teacher_cache.store(index, out)
        return out
