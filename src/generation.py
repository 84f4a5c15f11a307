"""Sampling answers from a chat LM: transformers `generate` (CPU or GPU, batched) or vLLM (GPU, optional).

Both backends take chat-formatted prompt strings and return, per prompt, `n` completions as text.
`temperature=0` is greedy decoding (then `n` must be 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from exact.sequence import chat_parts

Generator = Callable[..., list[list[str]]]  # (prompts, n, temperature, top_p, max_new_tokens, seed) -> texts


def chat_prompts(tokenizer, questions: Sequence[str], system_prompt: str | None) -> list[str]:
    """Each question as the model's chat prompt, through the assistant header (as the pruner builds it)."""
    return [chat_parts(tokenizer, q, system_prompt)[0] for q in questions]


def stop_token_ids(tokenizer) -> list[int]:
    """eos, plus the first token of the chat template's end-of-turn text (e.g. <|im_end|>)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    _, end_of_turn = chat_parts(tokenizer, "q", None)
    if end_of_turn.strip():
        ids.add(tokenizer(end_of_turn.strip(), add_special_tokens=False)["input_ids"][0])
    return sorted(ids)


def _check(n: int, temperature: float) -> None:
    if temperature == 0 and n != 1:
        raise ValueError(f"greedy decoding (temperature 0) gives one answer per prompt, not n={n}")


class HFGenerator:
    """Batched `model.generate` with left padding; `batch_size` prompts (× n samples) per call."""

    def __init__(self, model, tokenizer, batch_size: int = 8, progress: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.progress = progress
        self.stop = stop_token_ids(tokenizer)

    @torch.inference_mode()
    def __call__(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
    ) -> list[list[str]]:
        _check(n, temperature)
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.stop[0]
        device = next(self.model.parameters()).device
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "num_return_sequences": n}
            if temperature > 0
            else {"do_sample": False}
        )
        texts: list[list[str]] = []
        try:
            starts = range(0, len(prompts), self.batch_size)
            for batch, start in enumerate(tqdm(starts, desc="generate", unit="batch", disable=not self.progress)):
                chunk = list(prompts[start : start + self.batch_size])
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                torch.manual_seed(seed + batch)
                out = self.model.generate(
                    **enc, max_new_tokens=max_new_tokens, eos_token_id=self.stop, pad_token_id=pad, **sampling
                )
                decoded = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                texts += [decoded[i * n : (i + 1) * n] for i in range(len(chunk))]
        finally:
            tok.padding_side = side
        return texts


class VLLMGenerator:
    """vLLM offline generation (GPU); imported only when chosen, from the optional [vllm] extra."""

    def __init__(self, path: str, dtype: str = "auto", **engine: Any):
        try:
            from vllm import LLM
        except ImportError:
            raise ImportError("the vllm backend needs the [vllm] extra: pip install 'greedy-prune[vllm]'") from None
        self.llm = LLM(model=path, dtype=dtype, **engine)

    def __call__(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
    ) -> list[list[str]]:
        from vllm import SamplingParams

        _check(n, temperature)
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
        return [[o.text for o in request.outputs] for request in self.llm.generate(list(prompts), params)]


def make_generator(spec: DictConfig, progress: bool = True) -> tuple[Generator, Any]:
    """(generate, tokenizer) for a teacher or student spec with `model`, `backend` and backend settings."""
    from src.models import EMBEDDED, embedded_smollm2, load_model

    if spec.backend == "hf":
        model, tokenizer = load_model(**spec.model)
        return HFGenerator(model, tokenizer, spec.batch_size, progress), tokenizer
    if spec.backend == "vllm":
        from transformers import AutoTokenizer

        path = str(embedded_smollm2(spec.model.cache_dir)) if spec.model.path == EMBEDDED else spec.model.path
        return VLLMGenerator(path, **spec.vllm), AutoTokenizer.from_pretrained(path)
    raise ValueError(f"unknown generation backend {spec.backend!r}; expected 'hf' or 'vllm'")
