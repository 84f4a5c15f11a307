"""Teacher sampling is seeded per problem: batching and resuming do not change what a problem draws."""

from __future__ import annotations

import pytest

from conftest import tiny_llama
from src.api import compose_config
from src.generation import HFGenerator, chat_prompts
from src.teacher import problem_seed, sample_chains

QUESTIONS = ["What is 2 + 2?", "Add 3 and 4, please.", "What is 5 - 1?", "Double 6.", "Halve 8."]


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(vocab_size=len(tokenizer))


def test_a_prompt_samples_the_same_in_any_batch(model, tokenizer):
    prompts = chat_prompts(tokenizer, QUESTIONS[:3], "Be brief.")
    seeds = [11, 12, 13]
    batched = HFGenerator(model, tokenizer, 3, False)(prompts, 2, 0.7, 0.9, 8, seeds)
    alone = [HFGenerator(model, tokenizer, 1, False)([p], 2, 0.7, 0.9, 8, [s])[0] for p, s in zip(prompts, seeds)]
    assert batched == alone and [len(texts) for texts in batched] == [2, 2, 2]
    assert batched[0][0] != batched[0][1]  # the samples of one prompt differ
    other = HFGenerator(model, tokenizer, 3, False)(prompts, 2, 0.7, 0.9, 8, [21, 22, 23])
    assert other != batched
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        HFGenerator(model, tokenizer, 3, False)(prompts, 2, 0.7, 0.9, 8, [1, 2])


def test_problem_seed_is_a_stable_hash_of_seed_and_id():
    assert problem_seed(0, "p1") == 1070195455016647934
    assert len({problem_seed(0, "p1"), problem_seed(1, "p1"), problem_seed(0, "p2")}) == 3
    assert 0 <= problem_seed(0, "p1") < 2**63


class Killed(Exception):
    """Stands for the job being killed."""


class Recording:
    """A generator that records each prompt's samples, and is killed after `calls` calls."""

    def __init__(self, generate, calls: int | None = None):
        self.generate, self.calls, self.samples = generate, calls, {}

    def __call__(self, prompts, *args):
        if self.calls == 0:
            raise Killed
        self.calls = None if self.calls is None else self.calls - 1
        texts = self.generate(prompts, *args)
        self.samples.update(zip(prompts, texts))
        return texts


def test_a_resumed_teacher_run_draws_what_an_uninterrupted_one_draws(tmp_path, model, tokenizer):
    cfg = compose_config(
        "+experiment=generate", "teacher.samples=2", "teacher.max_new_tokens=8", "runtime.progress=false"
    )
    problems = [{"id": f"p{i}", "question": q, "gold": "1", "dataset": "toy"} for i, q in enumerate(QUESTIONS)]
    generate = HFGenerator(model, tokenizer, batch_size=2, progress=False)

    whole = Recording(generate)
    sample_chains(whole, tokenizer, problems, cfg, tmp_path / "whole", chunk=2)
    assert len(whole.samples) == len(problems)

    killed, resumed = Recording(generate, calls=1), Recording(generate)
    with pytest.raises(Killed):
        sample_chains(killed, tokenizer, problems, cfg, tmp_path / "resumed", chunk=2)
    counts = sample_chains(resumed, tokenizer, problems, cfg, tmp_path / "resumed", chunk=2)
    assert len(killed.samples) == 2 and len(resumed.samples) == 3  # the rerun drew only what was left
    assert counts["kept"] + counts["dropped"] == len(problems)
    assert {**killed.samples, **resumed.samples} == whole.samples
