"""TokenSkip's scorer: LLMLingua-2 word-level keep probabilities for a text.

TokenSkip (hemingkx/TokenSkip) compresses a chain of thought with LLMLingua-2: a token classifier (by default
``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``, XLM-RoBERTa with two labels, label 1 = "keep") scores
every token, the token probabilities of "keep" are averaged per word, and the words with the lowest keep
probability are dropped first. This module computes those per-word probabilities; choosing which words to drop is
the caller's business.

Words follow LLMLingua-2's XLM-R rule (``is_begin_of_new_word``): a word starts after whitespace or at a token that
is a single ASCII punctuation character, and the tokens that follow (up to the next whitespace or punctuation)
continue it. ``lingua_words`` applies that rule to characters rather than tokens, so it needs no tokenizer: ``"x=5."``
gives the words ``x``, ``=5`` and ``.``, as LLMLingua-2 gets them from the tokens ``▁x = 5 .``. Where a token spans
several of our words (a multi-character token such as ``...`` or ``3.5``), each of them gets that token's
probability.

The classifier sees exactly the tokens LLMLingua-2 feeds it: each whitespace-delimited piece of the text is
tokenized as one pre-split word (``is_split_into_words=True``), which for XLM-R's Metaspace tokenizer gives the same
tokens as tokenizing the whole text. Long texts run in windows of at most ``window`` tokens (special tokens
included), cut only at whitespace, like LLMLingua-2's chunks (it cuts at ``.`` or a newline instead); a piece that
alone exceeds a window is cut at token boundaries into windows of its own, so every token is scored.
"""

from __future__ import annotations

import bisect
import re
import string

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from src.baselines.ranking import Ranking, RankingPruner

DEFAULT_CLASSIFIER = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
KEEP_LABEL = 1

_PUNCT = re.escape(string.punctuation)
_WORD = re.compile(rf"\s*(?:[{_PUNCT}][^\s{_PUNCT}]*|[^\s{_PUNCT}]+)")


def lingua_words(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of LLMLingua-2's words of ``text``, in order: TokenSkip's units.

    Not the analyses' ``src.analysis.categories.words``, which keeps numbers and contractions whole.

    A word is a run of non-whitespace characters that starts after whitespace or at an ASCII punctuation
    character (which then begins a new word: ``"x=5."`` -> ``x``, ``=5``, ``.``). Each span includes the whitespace
    before its word, so joining ``text[s:e]`` for any ordered subset of spans keeps the original separators and
    never doubles them. The first span starts at its word (leading whitespace of ``text`` belongs to no span, so a
    subset that drops the first word starts with whitespace: strip it if that matters); trailing whitespace belongs
    to no span either, so joining all spans gives ``text.strip()``. Empty or all-whitespace text has no words.
    """
    spans = [m.span() for m in _WORD.finditer(text)]
    if spans:
        spans[0] = _word_cores(text, spans[:1])[0]
    return spans


def _word_cores(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans without their leading whitespace."""
    return [(e - len(text[s:e].lstrip()), e) for s, e in spans]


def _pieces(cores: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Whitespace-delimited pieces as ``(char_start, char_end, first_word)``: runs of words with nothing between."""
    pieces: list[tuple[int, int, int]] = []
    for i, (s, e) in enumerate(cores):
        if pieces and pieces[-1][1] == s:
            pieces[-1] = (pieces[-1][0], e, pieces[-1][2])
        else:
            pieces.append((s, e, i))
    return pieces


def _special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a single sequence (``<s>`` and ``</s>``)."""
    enc = tokenizer(["a"], is_split_into_words=True, add_special_tokens=True, return_special_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["special_tokens_mask"]
    n_before = next(i for i, m in enumerate(mask) if not m)
    n_after = next(i for i, m in enumerate(reversed(mask)) if not m)
    return ids[:n_before], ids[len(ids) - n_after :]


def _windows(piece_of_token: list[int], capacity: int) -> list[tuple[int, int]]:
    """Token ranges ``[a, b)`` of at most ``capacity`` tokens, cut only between pieces unless one piece is longer."""
    bounds: list[tuple[int, int]] = []
    n = len(piece_of_token)
    a = 0
    while a < n:
        b = min(a + capacity, n)
        if b < n and piece_of_token[b] == piece_of_token[b - 1]:  # would cut a piece: back off to its start
            cut = b - 1
            while cut > a and piece_of_token[cut - 1] == piece_of_token[b]:
                cut -= 1
            b = cut if cut > a else b  # a piece longer than a window is cut at token boundaries
        bounds.append((a, b))
        a = b
    return bounds


def _token_keep_probs(
    model: PreTrainedModel,
    ids: list[int],
    bounds: list[tuple[int, int]],
    affixes: tuple[list[int], list[int]],
    pad_id: int,
    batch_size: int,
) -> list[float]:
    """Keep probability of every content token, running the windows ``bounds`` of ``ids`` in padded batches."""
    before, after = affixes
    device = next(model.parameters()).device
    out = torch.empty(len(ids), dtype=torch.float32)
    with torch.inference_mode():
        for i in range(0, len(bounds), batch_size):
            batch = bounds[i : i + batch_size]
            rows = [before + ids[a:b] + after for a, b in batch]
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                input_ids[r, : len(row)] = torch.tensor(row)
                attention_mask[r, : len(row)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            keep = torch.softmax(logits.float(), dim=-1)[..., KEEP_LABEL].cpu()
            for r, (a, b) in enumerate(batch):
                out[a:b] = keep[r, len(before) : len(before) + b - a]
    return out.tolist()


def word_keep_probs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, window: int = 512, batch_size: int = 8
) -> list[float]:
    """LLMLingua-2 keep probability of each word of ``lingua_words(text)``, in order.

    Per token: softmax over the classifier's logits, probability of label 1; per word: the mean over the tokens
    that overlap it. Windows hold at most ``window`` tokens including the special ones. A word for which the
    tokenizer yields no token of its own (every token covering it also covers a neighbour, or its piece tokenizes
    to nothing) takes the mean of its whitespace-delimited piece, or 0.0 if the whole piece has no token: the
    classifier never sees it, and LLMLingua-2 would lose it from its output.
    """
    spans = lingua_words(text)
    if not spans:
        return []
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("word_keep_probs needs a fast tokenizer (for word_ids and offsets)")
    affixes = _special_affixes(tokenizer)
    capacity = window - len(affixes[0]) - len(affixes[1])
    if capacity < 1:
        raise ValueError(f"window={window} leaves no room next to the {window - capacity} special tokens")
    cores = _word_cores(text, spans)
    pieces = _pieces(cores)
    enc = tokenizer(
        [text[s:e] for s, e, _ in pieces],
        is_split_into_words=True,
        add_special_tokens=False,
        return_offsets_mapping=True,
        verbose=False,
    )
    content = [(i, p, o) for i, p, o in zip(enc["input_ids"], enc.word_ids(), enc["offset_mapping"]) if p is not None]
    ids = [i for i, _, _ in content]
    piece_of_token = [p for _, p, _ in content]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (model.config.pad_token_id or 0)
    probs = _token_keep_probs(model, ids, _windows(piece_of_token, capacity), affixes, pad_id, batch_size)

    core_starts = [s for s, _ in cores]
    word_sum, word_n = [0.0] * len(cores), [0] * len(cores)
    piece_sum, piece_n = [0.0] * len(pieces), [0] * len(pieces)
    for (_, p, (a, b)), prob in zip(content, probs):
        start = pieces[p][0] + a
        end = max(pieces[p][0] + b, start + 1)  # a zero-width token belongs to the word at its position
        piece_sum[p] += prob
        piece_n[p] += 1
        w = bisect.bisect_right(core_starts, start) - 1
        while w < len(cores) and cores[w][0] < end:
            word_sum[w] += prob
            word_n[w] += 1
            w += 1
    firsts = [f for _, _, f in pieces]
    piece_of_word = [bisect.bisect_right(firsts, w) - 1 for w in range(len(cores))]
    return [
        word_sum[w] / word_n[w] if word_n[w] else (piece_sum[p] / piece_n[p] if piece_n[p] else 0.0)
        for w, p in enumerate(piece_of_word)
    ]


def load_classifier(
    path: str = DEFAULT_CLASSIFIER, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` of an LLMLingua-2 token classifier, in eval mode on ``device`` (cuda when available).

    ``path`` is a Hugging Face hub id (needs internet access, or the hub cache) or a local folder holding the
    model's config, weights and tokenizer files.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForTokenClassification.from_pretrained(
            path, dtype="auto" if device.startswith("cuda") else torch.float32
        )
    except (OSError, ValueError) as e:
        raise OSError(
            f"cannot load the LLMLingua-2 token classifier from {path!r} ({type(e).__name__}: {e}). A hub id "
            f"such as {DEFAULT_CLASSIFIER!r} needs internet access (or the hub cache); without it, pass a local "
            "folder with config.json, the weights and the tokenizer files (e.g. one made by save_pretrained)."
        ) from e
    if model.config.num_labels <= KEEP_LABEL:
        raise ValueError(f"{path!r} has {model.config.num_labels} label(s); LLMLingua-2 classifiers have 2")
    return model.to(device).eval(), tokenizer


class TokenSkipPruner(RankingPruner):
    """TokenSkip: LLMLingua-2's token classifier scores the reasoning; words with the lowest mean keep
    probability go first (word-level, in windows of at most `window` classifier tokens). No pruner LM."""

    method, objective, uses_model = "tokenskip", "keep_probability", False

    def __init__(
        self, classifier: str = DEFAULT_CLASSIFIER, window: int = 512, batch_size: int = 8, device: str | None = None
    ):
        self.classifier, classifier_tokenizer = load_classifier(classifier, device)
        super().__init__(classifier_tokenizer, classifier)
        self.window, self.batch_size = window, batch_size

    def rank(self, question: str, reasoning: str, answer: str, record_id: str) -> Ranking:
        spans = lingua_words(reasoning)
        probs = word_keep_probs(self.classifier, self.tokenizer, reasoning, self.window, self.batch_size)

        def render(kept: list[int]) -> str:
            return "".join(reasoning[spans[i][0] : spans[i][1]] for i in kept).lstrip()

        units = [reasoning[s:e] for s, e in spans]
        return Ranking(units, torch.tensor(probs, dtype=torch.float64), render)
