"""Attention features equal a direct computation from `output_attentions`."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama, tiny_qwen2
from surrogate.features import reasoning_features


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2"])
def test_features_match_output_attentions(build):
    model = build(attn="eager")
    ids = torch.randint(0, 128, (30,), generator=torch.Generator().manual_seed(0))
    prompt_len, n = 8, 15
    features = reasoning_features(model, ids, prompt_len, n)
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
