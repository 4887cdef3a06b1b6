"""Model-card templates, installed as `hf_mmkd.model_cards` (see `hf_mmkd.hub`)."""
