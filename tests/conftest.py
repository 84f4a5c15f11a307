"""Shared fixtures: tiny randomly initialised causal LMs and a character-level chat tokenizer."""

from __future__ import annotations

import string

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from surrogate.groups import Group

SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character (printable ASCII plus a few accented letters), ChatML chat template."""
    chars = sorted(set(string.printable) | set("éü€—"))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        additional_special_tokens=SPECIALS[1:],
    )
    tok.chat_template = CHATML
    return tok


TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def tiny_model(config_class, model_class, vocab_size: int, attn: str, seed: int):
    """A randomly initialised two-layer causal LM with grouped-query attention."""
    torch.manual_seed(seed)
    config = config_class(vocab_size=vocab_size, **TINY)
    config._attn_implementation = attn
    return model_class(config).eval()


def tiny_llama(vocab_size: int = 128, attn: str = "sdpa", seed: int = 0) -> LlamaForCausalLM:
    return tiny_model(LlamaConfig, LlamaForCausalLM, vocab_size, attn, seed)


def tiny_qwen2(vocab_size: int = 128, attn: str = "sdpa", seed: int = 0) -> Qwen2ForCausalLM:
    return tiny_model(Qwen2Config, Qwen2ForCausalLM, vocab_size, attn, seed)


def tiny_mistral(vocab_size: int = 128, attn: str = "sdpa", seed: int = 0, window: int = 16) -> MistralForCausalLM:
    """A two-layer Mistral whose every layer attends to the last `window` positions only."""
    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=vocab_size, sliding_window=window, **TINY)
    config._attn_implementation = attn
    return MistralForCausalLM(config).eval()


def tiny_gemma3(vocab_size: int = 128, attn: str = "sdpa", seed: int = 0, window: int = 16) -> Gemma3ForCausalLM:
    """A three-layer Gemma 3: two sliding-window layers of `window` positions, then one full-attention layer."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        head_dim=8,
        sliding_window=window,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        **{**TINY, "num_hidden_layers": 3},
    )
    config._attn_implementation = attn
    return Gemma3ForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int = 128, attn: str = "sdpa", seed: int = 0) -> GPT2LMHeadModel:
    """A randomly initialised two-layer GPT-2 (fused `c_attn`, `Conv1D` projections, learned positions)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=512, vocab_size=vocab_size, bos_token_id=None, eos_token_id=None
    )
    config._attn_implementation = attn
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return char_tokenizer()


@pytest.fixture(scope="session")
def llama():
    return tiny_llama()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> str:
    """A tiny Llama and the char tokenizer saved as a local model folder, as `model.path` takes it."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread: more only fight over a busy machine's cores (tenfold slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def noisy_chains(records: int = 6, n: int = 30, steps: int = 12, noise: float = 1.0):
    """Groups along synthetic exact paths (each step deletes its best candidate) whose scores drift a little from
    step to step, and predictions off by a bias of each token's own plus a little noise a step."""
    torch.manual_seed(0)
    groups, predictions = [], []
    for record in range(records):
        value, bias, kept = torch.randn(n, dtype=torch.float64) * 3, torch.randn(n, dtype=torch.float64), list(range(n))
        for step in range(steps):
            value = value + 0.1 * torch.randn(n, dtype=torch.float64)
            y = value[kept]
            groups.append(Group(f"r{record}", step, torch.zeros(len(kept), 0), y.clone(), y, torch.tensor(kept)))
            predictions.append(y + noise * (bias[kept] + 0.1 * torch.randn(len(kept), dtype=torch.float64)))
            kept.pop(int(y.argmax()))
    return groups, predictions
