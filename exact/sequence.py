"""Turn (question, reasoning, answer) into the three token segments the pruner works on.

prompt ‖ reasoning ‖ answer, each tokenized on its own so that the reasoning span is exact
(no BPE merge crosses a segment edge). See docs/DESIGN.md §1.

The question, reasoning and answer are plain text: a special token's string inside them (`<|im_end|>`
in a reasoning) is tokenized as the characters it is made of, never as the special token, so input
text cannot end a turn or move a segment's edge. Text without such strings tokenizes exactly as the
tokenizer reads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_SENTINEL = "\u2063GREEDY_PRUNE_SENTINEL\u2063"
_QUESTION = "\u2063GREEDY_PRUNE_QUESTION\u2063"


@dataclass(frozen=True)
class Segments:
    """Token ids of one instance: `prompt` (through the assistant header), `reasoning`, `answer`."""

    prompt: torch.Tensor
    reasoning: torch.Tensor
    answer: torch.Tensor

    def with_kept(self, kept: torch.Tensor) -> torch.Tensor:
        """The full sequence prompt ‖ reasoning[kept] ‖ answer as one 1-D tensor."""
        return torch.cat([self.prompt, self.reasoning[kept], self.answer])


def _ids(tokenizer, text: str, plain: bool = False) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=plain)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def special_texts(tokenizer) -> list[str]:
    """The strings the tokenizer reads as special tokens (`<|im_end|>`, `<|endoftext|>`, ...)."""
    return [token.content for token in tokenizer.added_tokens_decoder.values() if token.special and token.content]


def token_ids(tokenizer, parts: Sequence[tuple[str, bool]]) -> torch.Tensor:
    """Token ids of the text `parts` joined, each (text, whether it is input text rather than template).

    Input text holding a special token's string is tokenized part by part, input parts as plain text;
    otherwise the joined text is tokenized whole, exactly as before (no part edge changes a merge).
    """
    specials = special_texts(tokenizer)
    if not any(given and any(s in text for s in specials) for text, given in parts):
        return _ids(tokenizer, "".join(text for text, _ in parts))
    return torch.cat([_ids(tokenizer, text, plain=given) for text, given in parts])


def plain_ids(tokenizer, text: str) -> torch.Tensor:
    """Token ids of input text on its own (a reasoning), special tokens' strings read as plain text."""
    return token_ids(tokenizer, [(text, True)])


def bos_text(tokenizer) -> str:
    """The bos token's text when the tokenizer puts it before every text it encodes, else ""."""
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if not bos or bos_id is None:
        return ""
    ids = tokenizer("a")["input_ids"]
    return bos if ids and ids[0] == bos_id else ""


def chat_parts(tokenizer, question: str, system_prompt: str | None) -> tuple[str, str]:
    """The prompt text up to the assistant header, and the end-of-turn text after an assistant reply.

    Uses the tokenizer's chat template when it has one; otherwise a plain `Question:/Answer:` layout
    closed by the eos token, opened by the bos token where the tokenizer starts every text with it
    (Gemma, Llama base models: without it they read the prompt as the middle of a document).
    """
    messages = [{"role": "user", "content": question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    if not getattr(tokenizer, "chat_template", None):
        head = f"{system_prompt}\n\n" if system_prompt else ""
        return f"{bos_text(tokenizer)}{head}Question: {question}\nAnswer: ", tokenizer.eos_token or ""
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": _SENTINEL}], tokenize=False)
    prompt, found, end_of_turn = full.partition(_SENTINEL)
    if not found:
        raise ValueError("the chat template drops the assistant reply; cannot locate the reasoning span")
    return prompt, end_of_turn


def prompt_parts(prompt: str, template: str) -> list[tuple[str, bool]]:
    """`prompt` as (template text before the question, False), (the question as rendered, True), (template
    text after it, False), given the `template`: the same prompt around the placeholder `_QUESTION`.

    The question's span is what the two do not share, which holds also where the template edits the
    text (Llama 3 trims it). A template that does not show the question exactly once is taken whole,
    as template text.
    """
    if template.count(_QUESTION) != 1:
        return [(prompt, False)]
    start = len(os.path.commonprefix([prompt, template]))
    end = len(prompt) - len(os.path.commonprefix([prompt[start:][::-1], template[start:][::-1]]))
    return [(prompt[:start], False), (prompt[start:end], True), (prompt[end:], False)]


def encode(
    tokenizer,
    question: str,
    reasoning: str,
    answer: str,
    system_prompt: str | None = None,
    answer_delimiter: str = "\n",
) -> Segments:
    """Tokenize one instance into its prompt, reasoning and answer segments; the question, reasoning and
    answer as plain text."""
    prompt, end_of_turn = chat_parts(tokenizer, question, system_prompt)
    template, _ = chat_parts(tokenizer, _QUESTION, system_prompt)
    return Segments(
        prompt=token_ids(tokenizer, prompt_parts(prompt, template)),
        reasoning=plain_ids(tokenizer, reasoning),
        answer=token_ids(tokenizer, [(answer_delimiter, False), (answer, True), (end_of_turn, False)]),
    )
