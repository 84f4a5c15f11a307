"""H2O, Surprisal and Uniform rank tokens as documented and fill the shared record schema."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_gemma3, tiny_gpt2, tiny_llama, tiny_mistral, tiny_qwen2
from exact.record import SCHEMA_FIELDS
from exact.sequence import encode
from src.api import build_pruner
from src.baselines.ranking import deletion_order
from src.baselines.token_scores import h2o_scores, surprisal_scores, uniform_scores
from src.run import run_task
from tests.test_run import prune_config, records_file, row

QUESTION, REASONING, ANSWER = "What is 3 + 4?", "3 + 4 = 7, so 7 apples.", "7"


@pytest.fixture(scope="module")
def segments(tokenizer):
    return encode(tokenizer, QUESTION, REASONING, ANSWER, "Solve it.")


LAYOUTS = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral, "gemma3": tiny_gemma3, "gpt2": tiny_gpt2}


@pytest.mark.parametrize("build", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_h2o_sums_attention_received_from_later_tokens(tokenizer, segments, build):
    model = build(vocab_size=len(tokenizer), attn="eager")
    ids = segments.with_kept(torch.arange(len(segments.reasoning)))
    attentions = model(input_ids=ids[None], output_attentions=True).attentions  # L × (1, H, T, T)
    received = sum(a[0].sum(0) for a in attentions)  # (T, T): query × key, summed over layers and heads
    start = len(segments.prompt)
    expected = torch.stack([received[p + 1 :, p].sum() for p in range(start, start + len(segments.reasoning))])
    assert torch.allclose(h2o_scores(model, segments), expected.detach(), atol=1e-5)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_h2o_reads_eager_attention_on_an_sdpa_model(tokenizer, segments, build):
    sdpa, eager = (build(vocab_size=len(tokenizer), attn=attn) for attn in ("sdpa", "eager"))
    assert torch.allclose(h2o_scores(sdpa, segments), h2o_scores(eager, segments), atol=1e-6)
    assert sdpa.config._attn_implementation == "sdpa"  # switched for the pass only


def test_surprisal_is_the_negative_teacher_forced_log_prob(tokenizer, segments):
    model = tiny_llama(vocab_size=len(tokenizer))
    ids = segments.with_kept(torch.arange(len(segments.reasoning)))
    logp = model(input_ids=ids[None]).logits[0].double().log_softmax(-1)
    start = len(segments.prompt)
    expected = torch.stack([-logp[p - 1, ids[p]] for p in range(start, start + len(segments.reasoning))])
    assert torch.allclose(surprisal_scores(model, segments).double(), expected, atol=1e-5)


def test_uniform_is_a_seeded_permutation_per_record():
    a, b = uniform_scores(20, 0, "r1"), uniform_scores(20, 0, "r1")
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(20))
    assert not torch.equal(a, uniform_scores(20, 0, "r2")) and not torch.equal(a, uniform_scores(20, 1, "r1"))


def test_deletion_order_is_lowest_first_with_ties_in_reading_order():
    assert deletion_order(torch.tensor([0.5, 0.1, 0.5, 0.1, 0.9])) == [1, 3, 0, 2, 4]


@pytest.mark.parametrize("method", ["h2o", "surprisal", "uniform"])
def test_baselines_prune_into_the_shared_schema(tmp_path, tiny_model_dir, tokenizer, method):
    data = records_file(tmp_path, [row("a", REASONING), row("b", "Add 3 and 4: the sum is 7.")])
    cfg = prune_config(
        tiny_model_dir, data, tmp_path / "out", f"pruner={method}", "pruner.prune.keep_fractions=[0.7,0.5]"
    )
    run_task(cfg)
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "b"]
    pruner = build_pruner(cfg)
    for record in records:
        assert set(SCHEMA_FIELDS) - {"step_scores", "exact_checks"} <= set(record) and record["method"] == method
        n = record["n_reasoning_tokens"]
        assert (
            sorted(record["deletion_order"]) == list(range(n))
            and "".join(record["reasoning_tokens"]) == record["reasoning"]
        )
        for keep, text in record["pruned"].items():
            kept = [i for i in range(n) if i not in set(record["deletion_order"][: n - int(n * float(keep))])]
            assert text == "".join(record["reasoning_tokens"][i] for i in kept)
        again = pruner.prune(record["question"], record["reasoning"], record["answer"], [0.5], id=record["id"])
        assert again.record.deletion_order == record["deletion_order"]  # deterministic, uniform included
