"""hf_mmkd: multimodal sentiment analysis robust to missing modalities, by knowledge distillation.

The model classes load on first use (`from hf_mmkd import MMKDForSentiment`, `hf_mmkd.MMKDConfig`, or any hf_mmkd
module that builds models) and register themselves with the transformers Auto classes then (the library route):
`import hf_mmkd` alone imports neither torch nor transformers, so that `hf-mmkd --help` answers at once. The
checkpoints hf_mmkd saves also carry the code for the remote-code route (`trust_remote_code=True`).
"""

import importlib

__version__ = "0.1.0"

# name -> the module (under hf_mmkd.modeling) that defines it; loaded by __getattr__ on first use
_MODEL_CLASSES = {
    "MMKDConfig": "configuration_mmkd",
    "MMKDForSentiment": "modeling_mmkd",
    "MMKDModel": "modeling_mmkd",
    "MMKDModelOutput": "modeling_mmkd",
    "MMKDPreTrainedModel": "modeling_mmkd",
    "MMKDSentimentOutput": "modeling_mmkd",
    "MMKDProcessor": "processing_mmkd",
}
_LAZY_SUBMODULES = ("cli", "data", "distillation", "evaluation", "hub", "inference", "io", "metrics", "report",
                    "trainer", "training")


def register_auto_classes() -> None:
    """Register the model with the transformers Auto classes (AutoConfig, AutoModel,
    AutoModelForSequenceClassification, AutoProcessor); done once, the first time a model class is looked up."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoProcessor

    from hf_mmkd.modeling.configuration_mmkd import MMKDConfig
    from hf_mmkd.modeling.modeling_mmkd import MMKDForSentiment, MMKDModel
    from hf_mmkd.modeling.processing_mmkd import MMKDProcessor

    AutoConfig.register("mmkd", MMKDConfig, exist_ok=True)
    AutoModel.register(MMKDConfig, MMKDModel, exist_ok=True)
    AutoModelForSequenceClassification.register(MMKDConfig, MMKDForSentiment, exist_ok=True)
    AutoProcessor.register(MMKDConfig, MMKDProcessor, exist_ok=True)


def __getattr__(name: str):
    """The model classes (registered with the Auto classes as they load), and `hf_mmkd.metrics`,
    `hf_mmkd.evaluation`, ... without importing them first: `import hf_mmkd` pulls in neither torch,
    transformers nor scikit-learn."""
    if name in _MODEL_CLASSES:
        register_auto_classes()
        for key, module in _MODEL_CLASSES.items():  # all at once: later look-ups skip __getattr__
            globals()[key] = getattr(importlib.import_module(f"hf_mmkd.modeling.{module}"), key)
        return globals()[name]
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"hf_mmkd.{name}")
    raise AttributeError(f"module 'hf_mmkd' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_MODEL_CLASSES) + list(_LAZY_SUBMODULES))


__all__ = [
    "MMKDConfig",
    "MMKDForSentiment",
    "MMKDModel",
    "MMKDModelOutput",
    "MMKDPreTrainedModel",
    "MMKDProcessor",
    "MMKDSentimentOutput",
]
