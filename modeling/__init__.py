"""Code shipped to the Hub with every checkpoint (installed as `hf_mmkd.modeling`)."""
