"""Sampling answers from a chat LM: transformers `generate` (CPU or GPU, batched) or vLLM (GPU, optional).

Both backends take chat-formatted prompt strings and return, per prompt, `n` completions as text.
`temperature=0` is greedy decoding (then `n` must be 1). Sampling draws each prompt's completions from
its own seed (`seed`: one per prompt, or one for all), so a prompt gets the same samples whatever
prompts share its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from exact.sequence import chat_parts

Generator = Callable[..., list[list[str]]]  # (prompts, n, temperature, top_p, max_new_tokens, seed(s)) -> texts


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


def per_prompt(seed: int | Sequence[int], count: int) -> list[int]:
    """One seed per prompt: `seed` itself for every prompt, or the given list (of `count` seeds)."""
    seeds = [seed] * count if isinstance(seed, int) else list(seed)
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} prompts")
    return seeds


class SeededSampling(LogitsProcessor):
    """Draws each prompt's `n` next tokens (rows in prompt order) from the prompt's own generator, after
    temperature and top-p; returns scores that are −inf but at the drawn token, for greedy decoding to take.

    One uniform per row and step, by inverse CDF: a prompt's draws do not depend on the rows batched with it.
    """

    def __init__(self, seeds: Sequence[int], n: int, temperature: float, top_p: float):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.n = n
        self.warpers = [TemperatureLogitsWarper(temperature)] + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        cdf = scores.double().softmax(-1).cumsum(-1)
        uniform = torch.cat([torch.rand(self.n, generator=g, dtype=torch.float64) for g in self.generators])
        target = (uniform.to(cdf.device) * cdf[:, -1])[:, None]
        token = torch.searchsorted(cdf, target, right=True).clamp(max=scores.shape[-1] - 1)
        return torch.full_like(scores, -math.inf).scatter_(1, token, 0.0)


class HFGenerator:
    """Batched `model.generate` with left padding; `batch_size` prompts (× n samples) per call.

    Samples with temperature and top-p only (`SeededSampling`); other processors of the model's generation
    config (e.g. a repetition penalty) apply before them.
    """

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
        seed: int | Sequence[int] = 0,
    ) -> list[list[str]]:
        _check(n, temperature)
        seeds = per_prompt(seed, len(prompts))
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.stop[0]
        device = next(self.model.parameters()).device
        texts: list[list[str]] = []
        try:
            starts = range(0, len(prompts), self.batch_size)
            for start in tqdm(starts, desc="generate", unit="batch", disable=not self.progress):
                chunk = list(prompts[start : start + self.batch_size])
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                sampling = (
                    [SeededSampling(seeds[start : start + self.batch_size], n, temperature, top_p)]
                    if temperature > 0
                    else []
                )
                out = self.model.generate(
                    **{key: value.repeat_interleave(n, dim=0) for key, value in enc.items()},
                    max_new_tokens=max_new_tokens,
                    eos_token_id=self.stop,
                    pad_token_id=pad,
                    do_sample=False,
                    logits_processor=LogitsProcessorList(sampling),
                )
                decoded = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                texts += [decoded[i * n : (i + 1) * n] for i in range(len(chunk))]
        finally:
            tok.padding_side = side
        return texts


class VLLMGenerator:
    """vLLM offline generation (GPU); imported only when chosen, from the optional [vllm] extra."""

    def __init__(self, path: str, dtype: str = "auto", progress: bool = True, **engine: Any):
        try:
            from vllm import LLM
        except ImportError:
            raise ImportError("the vllm backend needs the [vllm] extra: pip install 'greedy-prune[vllm]'") from None
        self.llm = LLM(model=path, dtype=dtype, **engine)
        self.progress = progress

    def __call__(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int | Sequence[int] = 0,
    ) -> list[list[str]]:
        from vllm import SamplingParams

        _check(n, temperature)
        params = [
            SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=s)
            for s in per_prompt(seed, len(prompts))
        ]
        requests = self.llm.generate(list(prompts), params, use_tqdm=self.progress)
        return [[o.text for o in request.outputs] for request in requests]


def hf_generator(model: dict[str, Any], batch_size: int = 8, progress: bool = True) -> tuple[Generator, Any]:
    """(generate, tokenizer): transformers `generate` over the model spec `model` (conf/model), batched."""
    from src.models import load_model

    lm, tokenizer = load_model(**model)
    return HFGenerator(lm, tokenizer, batch_size, progress), tokenizer


def vllm_generator(model: dict[str, Any], progress: bool = True, **engine: Any) -> tuple[Generator, Any]:
    """(generate, tokenizer): vLLM over the model spec `model` (conf/model), with its `engine` arguments."""
    from transformers import AutoTokenizer

    from src.models import resolve_model_path

    path = resolve_model_path(model["path"], model.get("cache_dir"))
    return VLLMGenerator(path, progress=progress, **engine), AutoTokenizer.from_pretrained(path)
