"""Functional categories of reasoning words: word splitting, rule labels, unit alignment, the LLM annotator."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hydra.utils import instantiate

from src.analysis.categories import (
    CATEGORIES,
    COREFERENCE,
    FUNCTION_WORDS,
    PAPER_KEYS,
    VERBAL_MATH,
    RuleAnnotator,
    rule_labels,
    unit_categories,
    words,
)
from src.analysis.llm_annotator import LLMAnnotator
from src.api import compose_config
from src.baselines.tokenskip import lingua_words

QUESTION = "Tom has 3 boxes of apples. Each box holds 12 apples. How many apples does Tom have in total?"
CHAIN = (
    "First, Tom has 3 boxes with 12 apples each, so the total is 3 times 12 = 36 apples. "
    "He gives 10 to his friends and they eat them, so 36 - 10 = 26 apples are left."
)


def split(text: str) -> list[str]:
    return [text[a:b] for a, b in words(text)]


def labelled(text: str, question: str = "") -> list[tuple[str, str]]:
    return list(zip(split(text), rule_labels(text, question)))


def label_of(text: str, word: str, question: str = "", nth: int = 0) -> str:
    return [label for w, label in labelled(text, question) if w == word][nth]


def test_words_split_numbers_contractions_and_symbols():
    assert split("3+4=7.") == ["3", "+", "4", "=", "7", "."]
    assert split("12.5% of $1,000 is 3/4, don't  stop") == [
        "12.5",
        "%",
        "of",
        "$",
        "1,000",
        "is",
        "3/4",
        ",",
        "don't",
        "stop",
    ]
    assert split("Tom's 5 apples.\nThen \\frac{1}{2}") == ["Tom's", "5", "apples", ".", "Then", "\\frac", "{", "1"] + [
        "}",
        "{",
        "2",
        "}",
    ]
    assert words("  a  b ") == [(2, 3), (5, 6)]  # whitespace belongs to no word
    assert words("") == []


def test_analysis_words_are_not_tokenskips_llmlingua_words():
    text = "Tom's 12.5 apples, 1,000 x=5."
    assert [text[a:b] for a, b in words(text)] == ["Tom's", "12.5", "apples", ",", "1,000", "x", "=", "5", "."]
    lingua = ["Tom", "'s", " 12", ".5", " apples", ",", " 1", ",000", " x", "=5", "."]  # LLMLingua-2's rule
    assert [text[a:b] for a, b in lingua_words(text)] == lingua


def test_rule_labels_on_a_gsm8k_chain():
    got = labelled(CHAIN, QUESTION)
    assert len(got) == len(words(CHAIN)) and all(label in CATEGORIES for _, label in got)
    expected = {
        "3": "SymbMath",
        "=": "SymbMath",
        "-": "SymbMath",
        "36": "SymbMath",
        "total": "VerbalMath",
        "times": "VerbalMath",
        "each": "VerbalMath",
        "left": "VerbalMath",
        "Tom": "EntName",
        "apples": "EntName",
        "boxes": "EntName",
        "friends": "EntName",
        "He": "CoRef",
        "they": "CoRef",
        "them": "CoRef",
        "his": "CoRef",
        "First": "MetaDisc",
        "so": "MetaDisc",
        "the": "Grammar",
        ",": "Grammar",
        ".": "Grammar",
        "is": "Grammar",
    }
    for word, category in expected.items():
        assert {label for w, label in got if w == word} == {category}, word


def test_rule_labels_patterns_and_context():
    assert [label for _, label in labelled("x + 2y = 10")] == ["SymbMath"] * 5
    assert label_of("a = 3", "a") == "SymbMath"  # a variable next to an operator
    assert label_of("a box", "a") == "Grammar"
    assert label_of("so 12.5% of $40", "%") == "SymbMath" and label_of("so 12.5% of $40", "$") == "SymbMath"
    assert label_of("\\boxed{26}", "\\boxed") == "SymbMath" and label_of("\\boxed{26}", "{") == "SymbMath"
    assert label_of("a well-known trick", "-") == "Grammar"
    assert label_of("(which is fine)", "(") == "Grammar"
    assert label_of("f(x) = 2", "(") == "SymbMath"
    assert label_of("Step 1: add them", ":") == "Grammar"
    assert label_of("It takes 30 minutes per day.", "minutes") == "EntName"  # units need not be in the question
    assert label_of("Ann and Bob share it.", "Bob") == "EntName"  # capitalised mid-sentence: a name
    assert label_of("Then she bought it.", "bought", "Ann has pears.") == "MetaDisc"  # content verb: fallback


def test_tie_break_takes_the_higher_priority():
    assert "each" in VERBAL_MATH and "each" in COREFERENCE
    assert label_of("each of them", "each") == "VerbalMath"  # VerbalMath > CoRef
    assert "that" in COREFERENCE and "all" in FUNCTION_WORDS
    assert label_of("that is all", "that") == "CoRef"  # CoRef > Grammar
    assert label_of("It took 1 second.", "second") == "EntName"  # unit (EntName) > MetaDisc
    assert label_of("Second, add them.", "Second") == "MetaDisc"
    assert label_of("He read 3 pages, so 3 pages.", "pages", "How many pages?") == "EntName"


def test_unit_categories_gives_sub_word_pieces_their_words_label():
    text = "apples are 3"
    labels = rule_labels(text, "How many apples?")
    assert labels == ["EntName", "Grammar", "SymbMath"]
    units = ["app", "les", " are", " 3"]
    assert unit_categories(text, units, labels, words(text)) == ["EntName", "EntName", "Grammar", "SymbMath"]
    # a pure-whitespace unit is Grammar; a unit across two words takes the one it overlaps most
    assert unit_categories("ab cd", ["ab", " ", "cd"], ["EntName", "SymbMath"], words("ab cd")) == [
        "EntName",
        "Grammar",
        "SymbMath",
    ]
    assert unit_categories("ab cde", ["ab c", "de"], ["EntName", "SymbMath"], words("ab cde"))[0] == "EntName"
    with pytest.raises(ValueError):
        unit_categories("ab", ["ab"], [], words("ab"))


def test_annotators_are_instantiated_from_their_configs(tmp_path, monkeypatch):
    rules = instantiate(compose_config("+experiment=analysis_categories").annotator)
    assert isinstance(rules, RuleAnnotator) and rules.labels("3 apples", "") == rule_labels("3 apples")
    assert (
        instantiate(compose_config("+experiment=analysis_categories", "annotator=llm").annotator).url
        == "https://api.openai.com/v1/chat/completions"
    )
    monkeypatch.setenv("TEST_ANNOTATOR_KEY", "sk-test")
    cfg = {
        "_target_": "src.analysis.llm_annotator.LLMAnnotator",
        "base_url": "http://127.0.0.1:1/v1/",
        "model": "m",
        "api_key_env": "TEST_ANNOTATOR_KEY",
        "cache_dir": str(tmp_path),
        "max_retries": 1,
        "timeout_s": 5,
        "temperature": 0.0,
    }
    llm = instantiate(cfg)
    assert (
        isinstance(llm, LLMAnnotator)
        and llm.api_key == "sk-test"
        and llm.url == "http://127.0.0.1:1/v1/chat/completions"
    )


# ── the LLM annotator against a local chat-completions server ──


class ChatServer:
    """A chat-completions endpoint on 127.0.0.1: answers with the queued (status, body) replies, then the last one."""

    def __init__(self, replies: list[tuple[int, object]]):
        self.replies = list(replies)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(self.rfile.read(length))}
                )
                status, body = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                payload = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    servers = []

    def start(replies):
        servers.append(ChatServer(replies))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def completion(content: object) -> dict:
    text = content if isinstance(content, str) else json.dumps(content)
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }


def annotator(server: ChatServer, tmp_path, **kw) -> LLMAnnotator:
    options = dict(max_retries=3, timeout_s=5, backoff_s=0.0)
    options.update(kw)
    return LLMAnnotator(server.base_url, "test-model", "sk-secret", tmp_path / "cache", **options)


def test_llm_annotator_request_labels_fallback_and_cache(chat_server, tmp_path):
    text, question = "He has 3 apples.", "Tom has 3 apples. How many?"
    # paper keys for words 0-3, and word 4 (".") left out → its rule-based label
    paper = ["COREFERENCE", "FUNCTION", "SYMBOLIC_MATH", "ENTITY_NAME"]
    answer = {"labels": [{"i": i, "category": c} for i, c in enumerate(paper)]}
    server = chat_server([(200, completion(answer))])
    llm = annotator(server, tmp_path)

    got = llm.labels(text, question)
    assert got == ["CoRef", "Grammar", "SymbMath", "EntName", rule_labels(text, question)[4]]
    assert llm.fallbacks == 1
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-secret"
    body = request["body"]
    assert body["model"] == "test-model" and body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system["role"] == "system" and all(c in system["content"] for c in CATEGORIES)
    assert "SymbMath > VerbalMath > EntName > CoRef > MetaDisc > Grammar" in system["content"]
    assert question in user["content"]
    for i, w in enumerate(split(text)):
        assert f"{i}: {json.dumps(w)}" in user["content"]

    assert llm.labels(text, question) == got  # served from the cache
    assert len(server.requests) == 1
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    fresh = annotator(server, tmp_path)  # a new annotator reads the same cache
    assert fresh.labels(text, question) == got and fresh.requests == 0


def test_llm_annotator_accepts_our_names_and_repairs_json(chat_server, tmp_path):
    text = "so 3 apples"
    broken = (  # fenced, lower-case name, unclosed
        '```json\n{"labels": [{"i": 0, "category": "metadisc"}, {"i": 1, "category": "SymbMath"}, '
        '{"i": 2, "category": "EntName"}'
    )
    server = chat_server([(200, completion(broken))])
    llm = annotator(server, tmp_path)
    assert llm.labels(text, "") == ["MetaDisc", "SymbMath", "EntName"] and llm.fallbacks == 0
    # an unknown category falls back too
    server.replies = [(200, completion({"labels": [{"i": 0, "category": "Banana"}, {"i": 1, "category": "SymbMath"}]}))]
    assert llm.labels("so 3", "x") == [rule_labels("so 3", "x")[0], "SymbMath"] and llm.fallbacks == 1


def test_llm_annotator_retries_server_errors(chat_server, tmp_path):
    answer = completion({"labels": [{"i": 0, "category": "SYMBOLIC_MATH"}]})
    server = chat_server([(500, {"error": "busy"}), (429, {"error": "slow down"}), (200, answer)])
    llm = annotator(server, tmp_path)
    assert llm.labels("7", "") == ["SymbMath"]
    assert len(server.requests) == 3


def test_llm_annotator_gives_up_after_max_retries(chat_server, tmp_path):
    server = chat_server([(500, {"error": "down"})])
    llm = annotator(server, tmp_path, max_retries=2)
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1.*/chat/completions.*3 attempts.*HTTP 500.*down"):
        llm.labels("7", "")
    assert len(server.requests) == 3  # the first try and two retries
    assert not list((tmp_path / "cache").glob("*.json"))


def test_llm_annotator_fails_at_once_on_a_client_error(chat_server, tmp_path):
    server = chat_server([(400, {"error": {"message": "model not found"}})])
    llm = annotator(server, tmp_path)
    with pytest.raises(RuntimeError, match=r"HTTP 400.*model not found"):
        llm.labels("7", "")
    assert len(server.requests) == 1


def test_llm_annotator_retries_connection_errors(tmp_path):
    llm = LLMAnnotator("http://127.0.0.1:1/v1", "m", None, tmp_path, max_retries=1, timeout_s=2, backoff_s=0.0)
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:1/v1/chat/completions.*2 attempts"):
        llm.labels("7", "")
    assert llm.requests == 2


def test_paper_keys_cover_the_categories():
    assert tuple(PAPER_KEYS) == CATEGORIES
    assert set(PAPER_KEYS.values()) == {
        "SYMBOLIC_MATH",
        "VERBAL_MATH",
        "ENTITY_NAME",
        "COREFERENCE",
        "META_DISCOURSE",
        "FUNCTION",
    }
