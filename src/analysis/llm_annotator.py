"""An LLM annotator of functional categories, over any OpenAI-compatible chat-completions endpoint.

The prompt follows the paper's App. D style: a system message with the six categories, their definitions and the
tie-break priority; a user message with the question and the chain, then the chain's words (`words(text)`) as a
numbered list, asking for `{"labels": [{"i": 0, "category": "SymbMath"}, ...]}`. Answers may use our names or the
paper's keys (SYMBOLIC_MATH, ...). A word the answer leaves out, or gives an unknown category, takes its rule-based
label (`rule_labels`); such fallbacks are counted and logged.

Requests (standard library only) retry with exponential back-off on HTTP 429 and 5xx, timeouts and connection
errors; other 4xx fail at once. Answers are cached on disk, one JSON file per sha256 of (model, prompt).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import json_repair

from src.analysis.categories import CATEGORIES, DEFINITIONS, PAPER_KEYS, rule_labels, words
from src.paths import cache_root

log = logging.getLogger(__name__)

# Our names and the paper's keys, in any case, to our names.
CATEGORY_NAMES: dict[str, str] = {
    **{c.lower(): c for c in CATEGORIES},
    **{k.lower(): c for c, k in PAPER_KEYS.items()},
}


def system_prompt() -> str:
    """The categories, their definitions and the tie-break priority."""
    lines = [
        "You annotate the reasoning chain of a math word problem word by word. Give every word exactly one of six "
        "functional categories:",
        "",
    ]
    lines += [f"- {c}: {DEFINITIONS[c]}" for c in CATEGORIES]
    lines += [
        "",
        "If a word fits several categories, choose the first in this priority order: " + " > ".join(CATEGORIES) + ".",
        "Judge each word in its context in the chain. Answer with a JSON object only, of the form "
        '{"labels": [{"i": 0, "category": "SymbMath"}, {"i": 1, "category": "Grammar"}, ...]}, '
        "with one entry per numbered word, in order, using exactly the category names above.",
    ]
    return "\n".join(lines)


def user_prompt(text: str, question: str) -> str:
    """The question, the chain, and the chain's words as a numbered list."""
    listed = "\n".join(f"{i}: {json.dumps(text[a:b], ensure_ascii=False)}" for i, (a, b) in enumerate(words(text)))
    return (
        f"Question:\n{question}\n\nReasoning chain:\n{text}\n\n"
        f"Words of the reasoning chain, numbered (label each one):\n{listed}\n\n"
        'Return {"labels": [{"i": <word number>, "category": <category>}, ...]} with one entry per word.'
    )


def parse_labels(content: str, n: int) -> list[str | None]:
    """The category the answer gives each of the `n` words (our names), None where it gives none it knows."""
    data = json_repair.loads(content) if content else None
    if isinstance(data, dict):
        entries = data.get("labels", data.get("words", data))
    else:
        entries = data
    out: list[str | None] = [None] * n
    if isinstance(entries, dict):  # {"0": "SymbMath", ...}
        entries = [{"i": i, "category": c} for i, c in entries.items()]
    if not isinstance(entries, list):
        return out
    for pos, entry in enumerate(entries):
        if isinstance(entry, dict):
            index = entry.get("i", entry.get("index", pos))
            category = entry.get("category", entry.get("label"))
        elif isinstance(entry, str):  # a bare list of categories, in order
            index, category = pos, entry
        else:
            continue
        try:
            index = int(index)
        except (TypeError, ValueError):
            continue
        name = CATEGORY_NAMES.get(str(category).strip().lower()) if category is not None else None
        if 0 <= index < n and out[index] is None and name is not None:
            out[index] = name
    return out


class LLMAnnotator:
    """Labels words with an LLM behind an OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, ollama)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        cache_dir: str | Path | None = None,
        max_retries: int = 3,
        timeout_s: float = 60,
        temperature: float = 0.0,
        backoff_s: float = 1.0,
        api_key_env: str | None = None,
    ):
        """`api_key`, or else the environment variable `api_key_env` (None: send no key)."""
        if not api_key and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                log.warning("annotator: environment variable %s is not set; sending no API key", api_key_env)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root() / "annotations"
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.backoff_s = backoff_s
        self.fallbacks = 0  # words given their rule-based label, over all calls
        self.requests = 0  # requests sent (cache hits send none)

    def labels(self, text: str, question: str = "") -> list[str]:
        """One category per word of `words(text)`: the model's, or the rule-based one where it gives none."""
        n = len(words(text))
        if n == 0:
            return []
        messages = [
            {"role": "system", "content": system_prompt()},
            {"role": "user", "content": user_prompt(text, question)},
        ]
        path = self.cache_path(messages)
        if path.exists():
            content = json.loads(path.read_text())["content"]
            parsed = parse_labels(content, n)
        else:
            content = self.complete(messages)
            parsed = parse_labels(content, n)
            if any(p is not None for p in parsed):  # never cache an answer that gave nothing usable
                self.store(path, messages, content)
        missing = [i for i, p in enumerate(parsed) if p is None]
        if not missing:
            return parsed  # type: ignore[return-value]
        self.fallbacks += len(missing)
        log.warning(
            "%s gave no known category for %d of %d words (e.g. word %d); using rule-based labels for them",
            self.model,
            len(missing),
            n,
            missing[0],
        )
        rules = rule_labels(text, question)
        return [p if p is not None else r for p, r in zip(parsed, rules)]

    def cache_path(self, messages: list[dict]) -> Path:
        """The cache file of (model, prompt)."""
        blob = json.dumps({"model": self.model, "messages": messages}, sort_keys=True, ensure_ascii=False)
        return self.cache_dir / f"{hashlib.sha256(blob.encode()).hexdigest()}.json"

    def store(self, path: Path, messages: list[dict], content: str) -> None:
        """Write an answer to the cache atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"model": self.model, "messages": messages, "content": content}, ensure_ascii=False))
        os.replace(tmp, path)

    def complete(self, messages: list[dict]) -> str:
        """The model's answer to `messages`, retrying transient failures `max_retries` times."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "response_format": {"type": "json_object"},
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        last_error, wait_s = "no attempt", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(max(self.backoff_s * 2 ** (attempt - 1), wait_s))
            self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    reply = response.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as e:
                message = e.read().decode("utf-8", "replace")[:500]
                if e.code != 429 and e.code < 500:
                    raise RuntimeError(
                        f"annotator endpoint {self.url} refused the request: HTTP {e.code}: {message}"
                    ) from e
                last_error, wait_s = f"HTTP {e.code}: {message}", retry_after(e.headers)
            except (
                urllib.error.URLError,
                TimeoutError,
                socket.timeout,
                ConnectionError,
                http.client.HTTPException,
            ) as e:
                last_error, wait_s = f"{type(e).__name__}: {getattr(e, 'reason', e)}", 0.0
            else:
                return self.content(reply)
            log.warning("annotator endpoint %s: %s (attempt %d)", self.url, last_error, attempt + 1)
        raise RuntimeError(
            f"annotator endpoint {self.url} failed after {self.max_retries + 1} attempts; last error: {last_error}"
        )

    def content(self, reply: str) -> str:
        """The message text of a chat-completions reply."""
        try:
            return json.loads(reply)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"annotator endpoint {self.url} sent no chat completion ({e!r}): {reply[:500]}") from e


def retry_after(headers) -> float:
    """The seconds a 429/503 reply's Retry-After header asks to wait (capped at a minute), else 0."""
    try:
        return min(max(float(headers.get("Retry-After", 0)), 0.0), 60.0)
    except (TypeError, ValueError, AttributeError):
        return 0.0
