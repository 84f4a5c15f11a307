"""Candidate features from the base pass equal direct computations; the first-order decomposition is exact."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_gemma3, tiny_gpt2, tiny_llama, tiny_mistral, tiny_qwen2
from exact.scorers import PackedScorer, rerun_from, scored_from
from surrogate import features
from surrogate.features import (
    BLOCKS,
    TOKEN_CLASSES,
    attention_modules,
    candidate_features,
    feature_blocks,
    feature_matrix,
    feature_width,
    prior_column,
    recording_received_attention,
    resume_at,
    token_class_table,
)


def chain(seed: int, length: int = 30):
    return torch.randint(0, 128, (length,), generator=torch.Generator().manual_seed(seed))


def recorded(model, ids, prompt_len, n, objective="joint"):
    with recording_received_attention(model, tail=len(ids) - prompt_len - n) as store:
        base = PackedScorer(model, objective).base_pass(ids, prompt_len, n)
    return store, base


LAYOUTS = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral, "gemma3": tiny_gemma3, "gpt2": tiny_gpt2}


@pytest.mark.parametrize("build", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_attention_features_match_output_attentions(build):
    """Every layout, sliding windows of 16 (Mistral, Gemma 3) on a chain of 30 included."""
    model = build(attn="sdpa")  # the recording switches the base pass to eager, and back
    ids, prompt_len, n = chain(0), 8, 15
    candidates = torch.arange(n)
    store, base = recorded(model, ids, prompt_len, n)
    assert model.config._attn_implementation == "sdpa"
    raw = candidate_features(store, base, n, candidates, ("attention", "next_attention", "answer_attention"))
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert raw["attention"].shape == raw["next_attention"].shape == raw["answer_attention"].shape == (n, layers * heads)
    answer = len(ids) - prompt_len - n

    model.set_attn_implementation("eager")
    with torch.no_grad():
        maps = model(input_ids=ids[None], output_attentions=True).attentions
    for j in range(n):
        p = prompt_len + j
        for layer in range(layers):
            for head in range(heads):
                column = layer * heads + head
                assert torch.isclose(raw["attention"][j, column], maps[layer][0, head, p + 1 :, p].mean(), atol=1e-6)
                expected_next = maps[layer][0, head, p + 2 :, p + 1].mean()
                assert torch.isclose(raw["next_attention"][j, column], expected_next, atol=1e-6)
                expected_answer = maps[layer][0, head, -answer:, p].mean()
                assert torch.isclose(raw["answer_attention"][j, column], expected_answer, atol=1e-6)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2, tiny_gemma3], ids=["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("kept", [4, 32])
def test_attention_totals_carry_over_to_an_incremental_base_pass(build, kept, monkeypatch):
    """A pass from a checkpoint of the totals at or before the last deletion gives a whole pass's features;
    the checkpoints kept stay about `CHECKPOINTS` a layer, so the totals grow linearly with the chain."""
    monkeypatch.setattr(features, "CHECKPOINTS", kept)
    model = build(attn="sdpa")
    ids, prompt_len, n = chain(1, 40), 8, 26
    answer, blocks = len(ids) - prompt_len - n, ("attention", "next_attention", "answer_attention")
    scorer = PackedScorer(model)
    with recording_received_attention(model, answer, prompt_len) as store:
        base = scorer.base_pass(ids, prompt_len, n)
    for j in (13, 20, 0, 2, 5):  # successive deletions
        ids, n = torch.cat([ids[: prompt_len + j], ids[prompt_len + j + 1 :]]), n - 1
        first = resume_at(store, rerun_from(base, ids, prompt_len), prompt_len)
        assert first <= max(prompt_len, prompt_len + j - 2)
        with recording_received_attention(model, answer, prompt_len, previous=store) as store:
            base = scorer.base_pass(ids, prompt_len, n, previous=base, first=first)
        fresh_store, fresh = recorded(model, ids, prompt_len, n)
        raw = candidate_features(store, base, n, torch.arange(n), blocks)
        expected = candidate_features(fresh_store, fresh, n, torch.arange(n), blocks)
        for block in blocks:
            assert torch.allclose(raw[block], expected[block], atol=1e-6), (j, block)
        assert j < 2 or base.tokens < fresh.tokens
        assert all(len(rows) <= 2 * kept + 1 for rows in store["sums"].values())
    with pytest.raises(ValueError, match="running totals of an earlier pass"):
        with recording_received_attention(model, answer, prompt_len):  # no earlier totals to start from
            scorer.base_pass(ids[:-1], prompt_len, n, previous=base)


def test_attention_of_an_unsupported_layout_names_the_model():
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=128, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2
    )
    model = OPTForCausalLM(config).eval()  # attention projections q_proj, k_proj, v_proj, out_proj
    with pytest.raises(ValueError, match="cannot read the attention of OPTForCausalLM.*GPT-2-style"):
        attention_modules(model)
    with pytest.raises(ValueError, match="OPTForCausalLM"), recording_received_attention(model):
        pass


def test_first_order_position_and_class_features(tokenizer):
    model = tiny_llama(vocab_size=len(tokenizer))
    prompt, reasoning = "<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\n", "12 + 30 = 42 apples.\n"
    ids = torch.tensor(tokenizer(prompt + reasoning + "42", add_special_tokens=False)["input_ids"])
    prompt_len, n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]), len(reasoning)
    store, base = recorded(model, ids, prompt_len, n)
    classes = token_class_table(tokenizer)
    candidates = torch.tensor([0, 3, 6, 13, 19, 20])
    raw = candidate_features(store, base, n, candidates, BLOCKS, classes)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids[None]).logits[0].double(), -1)
    q = prompt_len + candidates
    own, following = logp[q - 1, ids[q]], logp[q, ids[q + 1]]
    skip = logp[q - 1, ids[q + 1]]
    entropy = -(logp.exp() * logp).sum(-1)
    expected = torch.stack([-own, following, skip, entropy[q - 1], entropy[q]], dim=1)
    assert torch.allclose(raw["first_order"][:, :5].double(), expected, atol=1e-4)
    assert torch.allclose(raw["surprisal"].double(), -own, atol=1e-4)
    assert torch.allclose(raw["first_order"][:, 5].double(), raw["prior"] - base.objective, atol=1e-4)
    assert torch.allclose(raw["position"][:, 0], candidates / (n - 1))
    assert torch.allclose(raw["position"][:, 1], (len(ids) - 1 - q).float().log1p())
    names = [TOKEN_CLASSES[c] for c in raw["token_class"]]
    assert [tokenizer.decode([t]) for t in ids[q]] == ["1", "+", "0", "a", ".", "\n"]
    assert names == ["digit", "operator", "digit", "piece", "punctuation", "newline"]

    matrix = feature_matrix(raw, "+".join(BLOCKS))
    assert matrix.shape == (6, feature_width("+".join(BLOCKS), 2, 4)) == (6, 3 * 8 + 6 + 1 + 2 + len(TOKEN_CLASSES))
    assert feature_matrix(raw, "").shape == (6, 0)
    for feature_set in ("+".join(BLOCKS), "attention+first_order", "first_order+position"):
        matrix, column = feature_matrix(raw, feature_set), prior_column(feature_set, feature_width(feature_set, 2, 4))
        assert torch.allclose(matrix[:, column].double(), raw["prior"] - base.objective, atol=1e-4)
    assert prior_column("attention+position", feature_width("attention+position", 2, 4)) is None


@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_prefix_and_skip_are_the_candidate_sequence_through_the_next_token(objective):
    """prefix(q) + skip(q) = the candidate sequence's scored log-probs summed through position q+1."""
    model = tiny_llama()
    ids, prompt_len, n = chain(3, 40), 9, 25
    base = PackedScorer(model, objective).base_pass(ids, prompt_len, n)
    candidates = torch.arange(n)
    head = base.head(candidates)
    for j in candidates.tolist():
        q = prompt_len + j
        shorter = torch.cat([ids[:q], ids[q + 1 :]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=shorter[None]).logits[0].double(), -1)
        start = scored_from(objective, prompt_len, n - 1)
        positions = torch.arange(start, max(start, q + 1))  # the shorter sequence up to the old q+1 (now at q)
        expected = logp[positions - 1, shorter[positions]].sum()
        assert torch.isclose(head[j], expected, atol=1e-4), j
    # f(q) is exact when the later tokens' log-probs do not change: the last reasoning token before a
    # one-token answer has none.
    assert torch.allclose(base.first_order(candidates) - head, base.prefix[-1] - base.prefix[candidates + 2])


def test_feature_set_names_are_checked():
    assert feature_blocks("attention+first_order") == ("attention", "first_order")
    for bad in ("attention+attention", "attention+colour", "attention+"):
        with pytest.raises(ValueError, match="bad feature set"):
            feature_blocks(bad)


@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_lookahead_runs_from_first_order_to_exact(objective):
    """f_h reruns h tokens after the next one: f_0 is f(q), and a horizon past the chain's end is the exact score."""
    model = tiny_llama()
    ids, prompt_len, n = chain(5, 40), 9, 25
    scorer = PackedScorer(model, objective, token_budget=64, row_tokens=16)
    base = scorer.base_pass(ids, prompt_len, n)
    candidates = torch.arange(n)
    exact = scorer.score_from(base, candidates)
    assert torch.allclose(scorer.score_from(base, candidates, horizon=0).values, base.first_order(candidates))
    assert torch.allclose(scorer.score_from(base, candidates, horizon=len(ids)).values, exact.values, atol=1e-6)
    two = scorer.score_from(base, candidates, horizon=2)
    assert two.tokens < exact.tokens / 3  # about 2 tokens a candidate, plus row padding
    close = candidates >= n - 2 + (len(ids) - prompt_len - n) - 2  # suffixes of at most 2 rerun tokens: exact
    assert torch.allclose(two.values[close], exact.values[close], atol=1e-6)
