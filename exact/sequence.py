"""Turn (question, reasoning, answer) into the three token segments the pruner works on.

prompt ‖ reasoning ‖ answer, each tokenized on its own so that the reasoning span is exact
(no BPE merge crosses a segment edge). See docs/DESIGN.md §1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_SENTINEL = "\u2063GREEDY_PRUNE_SENTINEL\u2063"


@dataclass(frozen=True)
class Segments:
    """Token ids of one instance: `prompt` (through the assistant header), `reasoning`, `answer`."""

    prompt: torch.Tensor
    reasoning: torch.Tensor
    answer: torch.Tensor

    def with_kept(self, kept: torch.Tensor) -> torch.Tensor:
        """The full sequence prompt ‖ reasoning[kept] ‖ answer as one 1-D tensor."""
        return torch.cat([self.prompt, self.reasoning[kept], self.answer])


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def chat_parts(tokenizer, question: str, system_prompt: str | None) -> tuple[str, str]:
    """The prompt text up to the assistant header, and the end-of-turn text after an assistant reply.

    Uses the tokenizer's chat template when it has one; otherwise a plain `Question:/Answer:` layout
    closed by the eos token.
    """
    messages = [{"role": "user", "content": question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    if not getattr(tokenizer, "chat_template", None):
        head = f"{system_prompt}\n\n" if system_prompt else ""
        return f"{head}Question: {question}\nAnswer: ", tokenizer.eos_token or ""
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": _SENTINEL}], tokenize=False)
    prompt, found, end_of_turn = full.partition(_SENTINEL)
    if not found:
        raise ValueError("the chat template drops the assistant reply; cannot locate the reasoning span")
    return prompt, end_of_turn


def encode(
    tokenizer,
    question: str,
    reasoning: str,
    answer: str,
    system_prompt: str | None = None,
    answer_delimiter: str = "\n",
) -> Segments:
    """Tokenize one instance into its prompt, reasoning and answer segments."""
    prompt, end_of_turn = chat_parts(tokenizer, question, system_prompt)
    return Segments(
        prompt=_ids(tokenizer, prompt),
        reasoning=_ids(tokenizer, reasoning),
        answer=_ids(tokenizer, answer_delimiter + answer + end_of_turn),
    )
