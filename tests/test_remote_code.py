"""The shipped files are self-contained: a process that cannot import hf_mmkd loads a checkpoint with plain
transformers and trust_remote_code=True, and modeling/ imports only stdlib, torch, transformers and siblings."""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tiny import backbone_batch, backbone_config_kwargs, feature_batch, feature_config_kwargs

from hf_mmkd import MMKDConfig, MMKDForSentiment

MODELING_DIR = Path(__file__).resolve().parents[1] / "modeling"

# Runs in a fresh interpreter that refuses to import hf_mmkd, however it is installed.
LOADER = textwrap.dedent(
    """
    import importlib.util, sys
    class _BlockHfMmkd:
        def find_spec(self, name, path=None, target=None):
            if name == "hf_mmkd" or name.startswith("hf_mmkd."):
                raise ModuleNotFoundError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, _BlockHfMmkd())
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    ckpt = sys.argv[1]
    batch = torch.load(sys.argv[2])
    model = AutoModelForSequenceClassification.from_pretrained(ckpt, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**batch).logits
    torch.save(logits, sys.argv[3])
    base = AutoModel.from_pretrained(ckpt, trust_remote_code=True)
    config = AutoConfig.from_pretrained(ckpt, trust_remote_code=True)
    assert not any(m == "hf_mmkd" or m.startswith("hf_mmkd.") for m in sys.modules), "hf_mmkd was imported"
    print(type(model).__name__, type(base).__name__, type(config).__name__, type(model).__module__)
    """
)


@pytest.mark.parametrize("kind", ["features", "backbone"])
def test_checkpoint_loads_without_hf_mmkd(tmp_path, kind):
    make_kwargs, make_batch = {"features": (feature_config_kwargs, feature_batch),
                               "backbone": (backbone_config_kwargs, backbone_batch)}[kind]
    model = MMKDForSentiment(MMKDConfig(**make_kwargs())).eval()
    batch = make_batch(modality_mask=[[1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 1, 0]], labels=False)
    with torch.no_grad():
        expected = model(**batch).logits
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)

    files = sorted(p.name for p in ckpt.iterdir())
    assert files == ["config.json", "configuration_mmkd.py", "model.safetensors", "modeling_mmkd.py",
                     "pipeline_mmkd.py", "processing_mmkd.py"]  # the model's sibling imports
    auto_map = json.loads((ckpt / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_mmkd.MMKDConfig",
        "AutoModel": "modeling_mmkd.MMKDModel",
        "AutoModelForSequenceClassification": "modeling_mmkd.MMKDForSentiment",
    }

    torch.save(batch, tmp_path / "batch.pt")
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    result = subprocess.run(
        [sys.executable, str(script), str(ckpt), str(tmp_path / "batch.pt"), str(tmp_path / "logits.pt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = result.stdout.split()
    assert names[:3] == ["MMKDForSentiment", "MMKDModel", "MMKDConfig"]
    assert names[3].startswith("transformers_modules.")  # the copied code, not the installed package
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), expected, atol=1e-5)


def test_library_route_registers_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    MMKDForSentiment(MMKDConfig(**feature_config_kwargs())).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "MMKDConfig"
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path)) is MMKDForSentiment
    assert type(AutoModel.from_pretrained(tmp_path)).__name__ == "MMKDModel"


def _imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names.add("." + (node.module or ""))
            elif node.level > 1:
                names.add(".." * node.level)
            else:
                names.add(node.module.split(".")[0])
    return names


def test_shipped_files_import_only_stdlib_torch_transformers_and_siblings():
    shipped = sorted(MODELING_DIR.glob("*.py"))
    assert {p.name for p in shipped} >= {"configuration_mmkd.py", "modeling_mmkd.py"}
    siblings = {"." + p.stem for p in shipped}
    for path in shipped:
        for name in _imported_top_levels(path):
            allowed = name in sys.stdlib_module_names or name in {"torch", "transformers"} or name in siblings
            assert allowed, f"{path.name} imports {name!r}: shipped code may import only stdlib, torch, transformers"
