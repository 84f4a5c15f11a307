"""Benchmarks: answers in generated text, checking them, reading problems, and the paper's splits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.answers import extract_answer, extract_letter, is_correct, last_boxed, split_output, unbox
from src.api import compose_config
from src.data import BadInput, load_records
from src.problems import load_benchmark, make_splits, read_problems

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.parametrize(
    "text, reasoning, answer, value",
    [
        ('2+2=4.\n{"answer": 4}', "2+2=4.", '{"answer": 4}', "4"),
        ('2+2=4.\n```json\n{"answer": 4}\n```', "2+2=4.", '{"answer": 4}\n```', "4"),
        ('2+2=4.\n{"answer": 4', "2+2=4.", '{"answer": 4', "4"),
        ('```py\nx = 4\n```\n```\n{"answer": 4}```', "```py\nx = 4\n```", '{"answer": 4}```', "4"),
        ("2+2=4. {'answer': 4}", "2+2=4.", "{'answer': 4}", "4"),
        ('Total: 70,000.\n{"answer": 70,000}', "Total: 70,000.", '{"answer": 70,000}', "70,000"),
        ('First {"answer": 3}, no: {"check": {"ok": 1}, "answer": 5} done', 'First {"answer": 3}, no:', None, "5"),
    ],
)
def test_json_answers(text, reasoning, answer, value):
    split = split_output(text, "json")
    assert split is not None and split[0] == reasoning
    assert answer is None or split[1] == answer
    assert extract_answer(split[1], "json") == value


@pytest.mark.parametrize(
    "text, reasoning, value",
    [
        ("So x = 1/2.\nThus, the final answer is: \\boxed{\\frac{1}{2}}.", "So x = 1/2.", "\\frac{1}{2}"),
        (
            "M is this. Therefore, the final answer is $\\boxed{\\begin{pmatrix} 1 \\\\ {2} \\end{pmatrix}}$",
            "M is this.",
            "\\begin{pmatrix} 1 \\\\ {2} \\end{pmatrix}",
        ),
        ("The final answer is 3? No.\nThe Final Answer is: 4.\n\nHope it helps", "The final answer is 3? No.", "4"),
        ("Option C fits. Thus, the final answer is: C.", "Option C fits.", "C"),
    ],
)
def test_final_phrase_answers(text, reasoning, value):
    split = split_output(text, "final_phrase")
    assert split is not None and split[0] == reasoning
    assert split[1].lower().startswith(("thus", "therefore", "the final"))
    assert extract_answer(split[1], "final_phrase") == value


def test_no_answer_or_no_reasoning():
    assert split_output("2+2=4, so the answer is 4.", "json") is None
    assert split_output('  ```json\n{"answer": 4}```', "json") is None
    assert split_output("Thus, the final answer is: 4", "final_phrase") is None
    assert split_output("I am not sure.", "final_phrase") is None
    assert extract_answer("no object here", "json") is None
    assert extract_answer('{"answer": null}', "json") is None
    with pytest.raises(ValueError, match="answer style"):
        split_output("x", "xml")


def test_last_boxed():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b^{2}}}") == "\\frac{a}{b^{2}}"
    assert last_boxed("so it is $\\boxed 9$.") == "9"
    assert last_boxed("\\boxed{}") is None and last_boxed("\\boxed{open") is None and last_boxed("none") is None


def test_unbox_writes_each_box_as_its_content():
    assert unbox("a $\\boxed{\\frac{1}{2}}$ and $\\boxed 9$.") == "a $\\frac{1}{2}$ and $9$."
    assert unbox("\\boxed{\\boxed{x}} \\boxed{open") == "x \\boxed{open"
    assert unbox("nothing boxed") == "nothing boxed"


def test_math_checker():
    assert is_correct('{"answer": 0.5}', "\\frac{1}{2}", "math", "json")
    assert is_correct('{"answer": 70,000}', "70000", "math", "json")
    assert is_correct('{"answer": "$18.90"}', "\\$18.90", "math", "json")
    assert not is_correct('{"answer": 17}', "18", "math", "json")
    assert is_correct("Thus, the final answer is: \\boxed{\\dfrac{1}{2}}", "0.5", "math", "final_phrase")
    assert is_correct(
        "Thus, the final answer is: \\boxed{(3, \\frac{\\pi}{2})}",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        "math",
        "final_phrase",
    )
    assert not is_correct("Thus, the final answer is: \\boxed{\\frac{1}{3}}", "0.5", "math", "final_phrase")
    assert not is_correct("Thus, the final answer is: \\boxed{\\frac{", "1", "math", "final_phrase")


def test_math_checker_off_the_main_thread():
    """math-verify's signal-based timeouts fail outside the main thread; the checker runs without them there."""
    results = []
    worker = threading.Thread(target=lambda: results.append(is_correct('{"answer": 0.5}', "1/2", "math", "json")))
    worker.start()
    worker.join()
    assert results == [True]


@pytest.mark.parametrize("text", ["C", "(C)", "C.", "c", "C) 42 apples", "The answer is C", "**C**"])
def test_letters(text):
    assert extract_letter(text) == "C"
    assert is_correct(f"Thus, the final answer is: {text}", "C", "letter", "final_phrase")
    assert is_correct(text, "c", "letter", "final_phrase")


def test_not_letters():
    assert extract_letter("a cat") is None and extract_letter("Cats") is None and extract_letter("K") is None
    assert not is_correct("Thus, the final answer is: D", "C", "letter", "final_phrase")
    with pytest.raises(ValueError, match="checker"):
        is_correct("C", "C", "exact", "final_phrase")


def problems(n: int) -> list[dict]:
    return [{"id": f"p{i}", "question": "q", "gold": "1", "dataset": "t"} for i in range(n)]


def test_make_splits_exact_disjoint_and_seeded():
    pool = problems(50)
    splits = make_splits(pool, {"train": None, "dev": 10, "test": 5}, seed=0)
    assert list(splits) == ["train", "dev", "test"]
    assert [len(s) for s in splits.values()] == [35, 10, 5]
    ids = [p["id"] for s in splits.values() for p in s]
    assert len(set(ids)) == 50
    assert make_splits(list(reversed(pool)), {"train": None, "dev": 10, "test": 5}, seed=0) == splits
    assert make_splits(pool, {"train": None, "dev": 10, "test": 5}, seed=1)["dev"] != splits["dev"]
    assert [len(s) for s in make_splits(pool, {"a": 20, "b": 20}, seed=0).values()] == [20, 20]


def test_make_splits_errors():
    with pytest.raises(ValueError, match="need 60 problems, but the pool has only 50"):
        make_splits(problems(50), {"train": 50, "dev": 10}, seed=0)
    with pytest.raises(ValueError, match="only one split"):
        make_splits(problems(50), {"train": None, "test": None}, seed=0)
    with pytest.raises(ValueError, match="unique"):
        make_splits(problems(5) + problems(1), {"train": None}, seed=0)


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_read_gsm8k(tmp_path):
    path = write_jsonl(
        tmp_path / "g.jsonl",
        [{"question": "Q1?", "answer": "1+1=<<1+1=2>>2\n#### 1,200"}, {"question": "Q2?", "answer": "no final line"}],
    )
    good, bad = read_problems(path, "gsm8k", "train")
    assert good["id"] == "g-0" and good["gold"] == "1200" and good["question"] == "Q1?"
    assert good["dataset"] == "gsm8k" and good["meta"]["solution"] == "1+1=<<1+1=2>>2"
    assert isinstance(bad, BadInput) and str(bad).startswith(f"{path}:2: ") and "####" in bad.reason


def test_read_math(tmp_path):
    rows = [
        {
            "problem": "P?",
            "solution": "So $\\boxed{2}$ then $\\boxed{\\frac{1}{x^{2}}}$.",
            "type": "Algebra",
            "level": "Level 2",
            "unique_id": "train/algebra/1.json",
        },
        {"problem": "P?", "solution": "s \\boxed{4}", "answer": "4", "subject": "Algebra"},
        {"problem": "P?", "solution": "We guess $7$."},
        {"problem": "P?"},
    ]
    first, second, no_box, no_solution = read_problems(write_jsonl(tmp_path / "m.jsonl", rows), "math", "test")
    assert first["id"] == "train/algebra/1.json" and first["gold"] == "\\frac{1}{x^{2}}"
    assert first["meta"]["subject"] == "Algebra" and first["meta"]["level"] == "Level 2"
    assert second["id"] == "math-test-1" and second["gold"] == "4"
    assert isinstance(no_box, BadInput) and no_box.where.endswith("m.jsonl:3") and "boxed" in no_box.reason
    assert isinstance(no_solution, BadInput) and "'solution'" in no_solution.reason


def test_read_mmlu_pro(tmp_path):
    row = {"question_id": 7, "question": "Which?", "options": ["x", "y", "z"], "answer": "B", "category": "law"}
    rows = [row, {**row, "answer": "D"}, {**row, "options": "x"}, "not an object"]
    good, bad_letter, bad_options, not_object = read_problems(write_jsonl(tmp_path / "p.jsonl", rows), "mmlu_pro", "t")
    assert good == {
        "id": "mmlu_pro-7",
        "question": "Which?\nA. x\nB. y\nC. z",
        "gold": "B",
        "dataset": "mmlu_pro",
        "meta": {"category": "law"},
    }
    assert isinstance(bad_letter, BadInput) and "A–C" in bad_letter.reason
    assert isinstance(bad_options, BadInput) and "options" in bad_options.reason
    assert isinstance(not_object, BadInput) and not_object.where.endswith("p.jsonl:4")
    with pytest.raises(ValueError, match="format"):
        next(read_problems(str(tmp_path / "p.jsonl"), "arc", "test"))


@pytest.mark.parametrize("data", ["demo", "gsm8k", "math500"])
def test_rows_keep_their_id_from_the_distillation_path_to_the_prune_path(data):
    """The prune job's records (`data=…`) and the benchmark's problems name every row of a file alike."""
    cfg = compose_config(f"data={data}").data
    if not (cfg.path in ("demo", "easy") or Path(cfg.path).exists()):
        pytest.skip(f"{cfg.path} is not on this machine")
    records = load_records(cfg.path, cfg.format, cfg.split, cfg.answer_template, cfg.id_prefix, cfg.name)
    problems = read_problems(cfg.path, cfg.format, cfg.split)
    pairs = [(r["id"], p["id"]) for r, p in zip(records, problems, strict=True) if not isinstance(r, BadInput)]
    assert len(pairs) > 10 and all(record == problem for record, problem in pairs)


def test_load_benchmark_small(tmp_path):
    pool = write_jsonl(tmp_path / "train.jsonl", [{"question": f"Q{i}", "answer": f"#### {i}"} for i in range(20)])
    test = write_jsonl(tmp_path / "test.jsonl", [{"question": f"T{i}", "answer": f"#### {i}"} for i in range(6)])
    cfg = {
        "name": "toy",
        "format": "gsm8k",
        "files": {"pool": pool, "test": test},
        "seed": 0,
        "splits": {"train": None, "dev": 5, "test": None},
        "limit": {"train": 4, "dev": None, "test": 3},
    }
    splits = load_benchmark(OmegaConf.create(cfg))
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "dev": 5, "test": 3}
    assert [p["id"] for p in splits["test"]] == ["test-0", "test-1", "test-2"]
    assert splits["train"][0]["dataset"] == "toy"
    with pytest.raises(ValueError, match="splits.test must be null"):
        load_benchmark({**cfg, "splits": {"train": None, "dev": 5, "test": 3}})


PAPER_SIZES = {
    "gsm8k": {"train": 6973, "dev": 500, "test": 1319},
    # 6,700 less the two MATH train solutions whose \boxed{} is empty
    "math": {"train": 6698, "dev": 800, "test": 500},
    "mmlu_pro": {"train": 10000, "dev": 800, "test": 1232},
}


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs the local benchmark files in ../shared/data")
@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_paper_splits(name):
    cfg = compose_config("+experiment=distill", f"benchmark={name}").benchmark  # its files under paths.data_dir
    splits = load_benchmark(cfg)
    assert {k: len(v) for k, v in splits.items()} == PAPER_SIZES[name]
    ids = [p["id"] for split in splits.values() for p in split]
    assert len(set(ids)) == len(ids)
    assert load_benchmark(cfg)["dev"] == splits["dev"]
    sample = splits["test"][:200]
    passed = sum(
        is_correct(cfg.answer_template.replace("{answer}", p["gold"]), p["gold"], cfg.checker, cfg.answer_style)
        for p in sample
    )
    assert passed > 0.99 * len(sample)
