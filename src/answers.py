"""Final answers in generated text: where the reasoning ends, what the answer is, and whether it is right.

Two answer styles, as the benchmarks' system prompts ask for them:
- `json` (GSM8K): the text ends with a JSON object such as `{"answer": 42}`, perhaps in a ```json fence.
- `final_phrase` (MATH, MMLU-Pro): the text ends with "Thus, the final answer is: \\boxed{...}" or "...: C"
  (a plain "The answer is ..." is accepted too).

Two checkers: `math` compares expressions with math-verify (so `\\frac{1}{2}` equals `0.5`),
`letter` compares a multiple-choice option letter A–J.
"""

from __future__ import annotations

import re
import threading

import json_repair
import math_verify

STYLES = ("json", "final_phrase")
CHECKERS = ("math", "letter")
TIMEOUT_S = 5  # math-verify's limit per parse and per comparison (main thread only)

_ANSWER_KEY = re.compile(r"[\"']answer[\"']\s*:")
_FENCE_OPENER = re.compile(r"```[A-Za-z]*$")
_FINAL_PHRASE = re.compile(r"(?:\b(?:thus|therefore|so|hence),?\s+)?\bthe (?:final )?answer is", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed(?:\s*\{|\s+([^\s${}]+))")  # \boxed{...} or \boxed 5
_MATH_MODE = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed\b")  # `\$` is a dollar sign, not math mode
_LETTER_ALONE = re.compile(r"\(?([A-Ja-j])\)?[.:]?")
_LETTER_FIRST = re.compile(r"\(?([A-J])(?:[.):]|\s|$)")
_LETTER_STATED = re.compile(r"\b[Aa]nswer is:?\s*\(?([A-J])\b")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown answer style {style!r}; expected one of {STYLES}")


def _json_start(text: str) -> int | None:
    """Index of the `{` opening the last object with an "answer" key, or None."""
    keys = list(_ANSWER_KEY.finditer(text))
    if not keys:
        return None
    depth = 0
    for i in range(keys[-1].start() - 1, -1, -1):
        if text[i] == "}":
            depth += 1
        elif text[i] == "{":
            if depth == 0:
                return i
            depth -= 1
    return None


def _json_object(text: str, start: int) -> str:
    """The object that opens at `start`, up to its matching `}` (or the end, if it is never closed)."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
    return text[start:]


def _closing_brace(text: str, start: int) -> int | None:
    """The index of the `}` that closes a brace opened just before `start`, or None when it stays open."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces balanced) or `\\boxed 5` in `text`, stripped.

    None if there is none, or it is unclosed or empty.
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    if last.group(1) is not None:
        return last.group(1).rstrip(".") or None
    end = _closing_brace(text, last.end())
    return None if end is None else text[last.end() : end].strip() or None


def unbox(text: str) -> str:
    """`text` with each `\\boxed{X}` (and `\\boxed X`) written as X; an unclosed one is left as it is."""
    out, at = [], 0
    for match in _BOXED.finditer(text):
        if match.start() < at:  # inside a box already unwrapped
            continue
        if match.group(1) is not None:
            out += [text[at : match.start()], match.group(1)]
            at = match.end()
            continue
        end = _closing_brace(text, match.end())
        if end is not None:
            out += [text[at : match.start()], unbox(text[match.end() : end])]
            at = end + 1
    return "".join(out) + text[at:]


def split_output(text: str, style: str) -> tuple[str, str] | None:
    """(reasoning, answer) of a model's output, split where its final answer begins.

    `json`: the answer starts at the last JSON object with an "answer" key (a dangling ```json fence
    opener goes with neither part). `final_phrase`: it starts at the last "the final answer is", with
    its "Thus,"/"Therefore,"/"So"/"Hence" lead-in ("the answer is" counts too). None when there is
    no answer or no reasoning before it.
    """
    _check_style(style)
    if style == "json":
        start = _json_start(text)
        if start is None:
            return None
        reasoning = text[:start].rstrip()
        if reasoning.count("```") % 2:  # an unclosed fence, opened for the answer
            reasoning = _FENCE_OPENER.sub("", reasoning)
    else:
        phrases = list(_FINAL_PHRASE.finditer(text))
        if not phrases:
            return None
        start = phrases[-1].start()
        reasoning = text[:start]
    reasoning = reasoning.strip()
    if not reasoning:
        return None
    return reasoning, text[start:].strip()


def extract_answer(answer_text: str, style: str) -> str | None:
    """The final answer in `answer_text` as a string, or None if it holds none.

    `json`: the value of "answer" in the last such object, read leniently (json_repair), so
    `{"answer": 42`, `{'answer': 42}` and `{"answer": 70,000}` all work. `final_phrase`: what follows
    "the final answer is" (its first line, trailing period removed), or the content of its last `\\boxed{}`.
    """
    _check_style(style)
    if style == "json":
        start = _json_start(answer_text)
        if start is None:
            return None
        obj = json_repair.loads(_json_object(answer_text, start))
        value = obj.get("answer") if isinstance(obj, dict) else None
        return None if value is None else str(value).strip()
    phrases = list(_FINAL_PHRASE.finditer(answer_text))
    if not phrases:
        return None
    rest = answer_text[phrases[-1].end() :].lstrip(" \t:")
    boxed = last_boxed(rest)
    if boxed is not None:
        return boxed
    line = rest.strip().split("\n", 1)[0]
    return line.strip(" *").rstrip(".").strip(" *") or None


def extract_letter(text: str) -> str | None:
    """The option letter (A–J, upper case) in "C", "(C)", "c.", "C) text" or "The answer is C"; else None."""
    text = text.strip().strip("*$ ")
    match = _LETTER_ALONE.fullmatch(text) or _LETTER_FIRST.match(text) or _LETTER_STATED.search(text)
    return match.group(1).upper() if match else None


def _as_latex(answer: str) -> str:
    """`answer` in math mode for math-verify, unless it already is (`$`, `\\(`, `\\[` or `\\boxed`)."""
    if _MATH_MODE.search(answer):
        return answer
    return f"${answer}$"


def _math_equal(gold: str, predicted: str) -> bool:
    """math-verify's verdict; its signal-based timeouts only work in the main thread, so none elsewhere."""
    limit = TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = math_verify.parse(_as_latex(gold), parsing_timeout=limit)
        pred_parsed = math_verify.parse(_as_latex(predicted), parsing_timeout=limit)
        return bool(gold_parsed and pred_parsed and math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=limit))
    except Exception:  # math-verify can raise on odd LaTeX or time out; either way the answer is not verified
        return False


def is_correct(answer_text: str, gold: str, checker: str, style: str) -> bool:
    """Whether the answer in `answer_text` (read as `style`; the whole text if none is found) matches `gold`.

    `math`: math-verify equivalence (`\\frac{1}{2}` = `0.5`, `70,000` = `70000`); `letter`: same option letter.
    """
    if checker not in CHECKERS:
        raise ValueError(f"unknown checker {checker!r}; expected one of {CHECKERS}")
    predicted = extract_answer(answer_text, style)
    if predicted is None:
        predicted = answer_text
    if checker == "letter":
        letter = extract_letter(predicted)
        return letter is not None and letter == gold.strip().upper()
    return _math_equal(gold, predicted)
