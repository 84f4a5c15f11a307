"""Attention features equal a direct computation from `output_attentions`."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama, tiny_qwen2
from exact.scorers import PackedScorer
from surrogate.features import candidate_features, feature_matrix, reasoning_features, recording_received_attention


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2"])
def test_features_match_output_attentions(build):
    model = build(attn="eager")
    ids = torch.randint(0, 128, (30,), generator=torch.Generator().manual_seed(0))
    prompt_len, n = 8, 15
    features = reasoning_features(model, ids, prompt_len, n).attention
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    assert features.shape == (n, layers * heads)

    with torch.no_grad():
        maps = model(input_ids=ids[None], output_attentions=True).attentions
    for j in range(n):
        p = prompt_len + j
        for layer in range(layers):
            for head in range(heads):
                expected = maps[layer][0, head, p + 1 :, p].mean()
                assert torch.isclose(features[j, layer * heads + head], expected, atol=1e-6)


def test_sdpa_model_is_refused():
    with pytest.raises(RuntimeError, match="attn_implementation=eager"):
        reasoning_features(tiny_llama(attn="sdpa"), torch.arange(10), 2, 4)


def test_surprisal_and_position_features_match_the_hybrids_base_pass():
    model = tiny_llama(attn="eager")
    ids = torch.randint(0, 128, (30,), generator=torch.Generator().manual_seed(1))
    prompt_len, n = 8, 15
    direct = reasoning_features(model, ids, prompt_len, n)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids[None]).logits[0].double(), -1)
    expected = -logprobs[prompt_len - 1 : prompt_len + n - 1].gather(1, ids[prompt_len : prompt_len + n, None])[:, 0]
    assert torch.allclose(direct.surprisal.double(), expected, atol=1e-4)

    candidates = torch.tensor([0, 3, 14])
    with recording_received_attention(model) as store:
        base = PackedScorer(model).base_pass(ids, prompt_len, n)
    from_base = candidate_features(store, base, n, candidates)
    assert torch.allclose(from_base.attention, direct.attention[candidates], atol=1e-6)
    assert torch.allclose(from_base.surprisal, direct.surprisal[candidates], atol=1e-4)
    assert torch.equal(from_base.position, direct.position[candidates])

    assert feature_matrix(direct, "attention").shape == (n, 8)
    both = feature_matrix(direct, "attention+surprisal")
    assert both.shape == (n, 10) and torch.equal(both[:, -1], direct.position)
