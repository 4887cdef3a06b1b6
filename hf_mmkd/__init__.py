"""hf_mmkd: multimodal sentiment analysis robust to missing modalities, by knowledge distillation.

Importing the package registers the model with the transformers Auto classes (the library route); the
checkpoints it saves also carry the code for the remote-code route (`trust_remote_code=True`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoProcessor

from hf_mmkd.modeling.configuration_mmkd import MMKDConfig
from hf_mmkd.modeling.modeling_mmkd import (
    MMKDForSentiment,
    MMKDModel,
    MMKDModelOutput,
    MMKDPreTrainedModel,
    MMKDSentimentOutput,
)
from hf_mmkd.modeling.processing_mmkd import MMKDProcessor

AutoConfig.register("mmkd", MMKDConfig, exist_ok=True)
AutoModel.register(MMKDConfig, MMKDModel, exist_ok=True)
AutoModelForSequenceClassification.register(MMKDConfig, MMKDForSentiment, exist_ok=True)
AutoProcessor.register(MMKDConfig, MMKDProcessor, exist_ok=True)

__version__ = "0.1.0"


def __getattr__(name: str):
    """`hf_mmkd.metrics`, `hf_mmkd.evaluation`, ... without importing them first (they load lazily: the metrics
    pull in scikit-learn, which `import hf_mmkd` alone does not need)."""
    import importlib

    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"hf_mmkd.{name}")
    raise AttributeError(f"module 'hf_mmkd' has no attribute {name!r}")


_LAZY_SUBMODULES = ("cli", "data", "distillation", "evaluation", "hub", "inference", "io", "metrics", "report",
                    "trainer", "training")
__all__ = [
    "MMKDConfig",
    "MMKDForSentiment",
    "MMKDModel",
    "MMKDModelOutput",
    "MMKDPreTrainedModel",
    "MMKDProcessor",
    "MMKDSentimentOutput",
]
