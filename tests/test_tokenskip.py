"""TokenSkip's LLMLingua-2 scorer on a tiny random XLM-R token classifier with an XLM-R-style (Metaspace) tokenizer."""

from __future__ import annotations

import string

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaForTokenClassification

from src.baselines.tokenskip import lingua_words, load_classifier, word_keep_probs

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R's ids 0..3
WHOLE = ["the", "cat", "sat", "on", "mat", "Step", "answer", "so"]


pytestmark = pytest.mark.usefixtures("one_thread")


def xlmr_like_tokenizer() -> PreTrainedTokenizerFast:
    """Unigram over a few whole words and single characters, Metaspace pre-tokenizer, ``<s> ... </s>``."""
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    pieces = [(s, 0.0) for s in SPECIALS]
    pieces += [("▁" + w, -2.0) for w in WHOLE] + [("...", -2.0), ("▁", -6.0)]
    pieces += [("▁" + c, -4.0) for c in chars] + [(c, -5.0) for c in chars] + [("<mask>", 0.0)]
    core = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def tiny_classifier(vocab_size: int, context_free: bool = False) -> XLMRobertaForTokenClassification:
    """A random 2-label XLM-R token classifier; ``context_free``: each token's logits depend on that token only."""
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=520,
        type_vocab_size=1,
        num_labels=2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    model = XLMRobertaForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(20)  # spread the probabilities out
        if context_free:
            model.roberta.embeddings.position_embeddings.weight.zero_()
            model.roberta.embeddings.token_type_embeddings.weight.zero_()
            for layer in model.roberta.encoder.layer:  # attention adds nothing to the residual stream
                layer.attention.output.dense.weight.zero_()
                layer.attention.output.dense.bias.zero_()
    return model


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return xlmr_like_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_classifier(len(tok))


@pytest.fixture(scope="module")
def free_model(tok):
    return tiny_classifier(len(tok), context_free=True)


def max_input_length(model, fn):
    """Run ``fn()`` and return the longest sequence the model was given."""
    seen = []
    handle = model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        result = fn()
    finally:
        handle.remove()
    return result, max(seen)


def token_probs_alone(model, tok, tokens: list[str]) -> list[float]:
    """Keep probability of each token run on its own between ``<s>`` and ``</s>``."""
    out = []
    for t in tokens:
        ids = torch.tensor([[tok.cls_token_id, tok.convert_tokens_to_ids(t), tok.sep_token_id]])
        with torch.no_grad():
            out.append(torch.softmax(model(input_ids=ids).logits, -1)[0, 1, 1].item())
    return out


TEXT = "  Step 1: x=5.\n\nSo  the cat's (3) ok  \n"


def test_words_spans_include_the_whitespace_before():
    spans = lingua_words(TEXT)
    got = [TEXT[s:e] for s, e in spans]
    assert got == ["Step", " 1", ":", " x", "=5", ".", "\n\nSo", "  the", " cat", "'s", " (3", ")", " ok"]
    assert "".join(got) == TEXT.strip()
    assert "".join(TEXT[s:e] for s, e in spans[1::2]) == " 1 x.  the's)"
    assert all(s < e for s, e in spans) and all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
    assert lingua_words("") == [] and lingua_words(" \n\t ") == []
    assert [("x y"[s:e]) for s, e in lingua_words("x y")] == ["x", " y"]
    assert lingua_words("wait...") == [(0, 4), (4, 5), (5, 6), (6, 7)]


def test_load_classifier_and_probabilities(tmp_path, tok, model):
    model.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    loaded, loaded_tok = load_classifier(str(tmp_path / "clf"), device="cpu")
    assert not loaded.training and next(loaded.parameters()).device.type == "cpu"
    probs = word_keep_probs(loaded, loaded_tok, TEXT)
    assert len(probs) == len(lingua_words(TEXT))
    assert all(0.0 < p < 1.0 for p in probs)
    assert len(set(probs)) > len(probs) // 2  # not a constant
    assert probs == pytest.approx(word_keep_probs(model, tok, TEXT), abs=1e-6)
    assert word_keep_probs(loaded, loaded_tok, "") == [] and word_keep_probs(loaded, loaded_tok, "  \n") == []


def test_matches_running_the_classifier_on_the_whole_text(tok, model):
    text = "the cat sat on the mat so 42 xyz"  # no punctuation: our words are the tokenizer's words
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        keep = torch.softmax(model(**enc).logits, -1)[0, :, 1]
    per_word: dict[int, list[float]] = {}
    for i, w in enumerate(enc.word_ids()):
        if w is not None:
            per_word.setdefault(w, []).append(keep[i].item())
    expected = [sum(v) / len(v) for _, v in sorted(per_word.items())]
    assert len(expected) == len(lingua_words(text))
    assert word_keep_probs(model, tok, text) == pytest.approx(expected, abs=1e-5)


def test_windows_hold_whole_words_and_see_only_their_own_words(tok, model):
    ws = (WHOLE * 4)[:30]  # one token each: windows of 16 hold 14 words
    text = " ".join(ws)
    probs, longest = max_input_length(model, lambda: word_keep_probs(model, tok, text, window=16, batch_size=2))
    assert longest <= 16
    expected = []
    for a in range(0, 30, 14):
        expected += word_keep_probs(model, tok, " ".join(ws[a : a + 14]))
    assert probs == pytest.approx(expected, abs=1e-5)
    assert probs != pytest.approx(word_keep_probs(model, tok, text), abs=1e-3)  # context does matter here

    ws = ["abc", "def", "ghi", "jkl", "mno", "pqr", "stu", "vwx", "yzA"]  # three tokens each: 4 words a window
    assert len(tok(ws[0], add_special_tokens=False)["input_ids"]) == 3
    probs = word_keep_probs(model, tok, " ".join(ws), window=16)
    expected = []
    for a in range(0, len(ws), 4):
        expected += word_keep_probs(model, tok, " ".join(ws[a : a + 4]))
    assert probs == pytest.approx(expected, abs=1e-5)


def test_padding_and_batch_size_do_not_matter(tok, model):
    text = "So the cat sat, and sat; then x=5... abcdefghijklmnop qrs the mat" * 2
    one = word_keep_probs(model, tok, text, window=12, batch_size=1)
    assert word_keep_probs(model, tok, text, window=12, batch_size=8) == pytest.approx(one, abs=1e-5)


def test_window_size_does_not_matter_without_context(tok, free_model):
    long_word = "abcdefghijklmnopqrstuvwxyz" * 2  # 52 tokens: longer than a window of 16
    text = f"Step 1: the cat sat on {long_word} mat.\nSo x=5... and (3) done " * 3
    full = word_keep_probs(free_model, tok, text, window=512)
    for window, batch_size in ((16, 3), (5, 1), (3, 32)):
        small, longest = max_input_length(
            free_model, lambda: word_keep_probs(free_model, tok, text, window=window, batch_size=batch_size)
        )
        assert longest <= window
        assert small == pytest.approx(full, abs=1e-5)
    assert len(full) == len(lingua_words(text)) and all(0.0 < p < 1.0 for p in full)


def test_hand_set_classifier_orders_words(tok, free_model):
    model = tiny_classifier(len(tok), context_free=True)
    cat = tok.convert_tokens_to_ids("▁cat")
    with torch.no_grad():
        h = model.roberta(input_ids=torch.tensor([[0, cat, 2]])).last_hidden_state[0, 1]
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[1] = 3 * h / h.norm() ** 2  # keep logit = 3 cos(h_t, h_cat): LayerNorm evens norms
    text = "the cat sat on the mat cats cat... so"
    got = dict(zip([text[s:e].strip() for s, e in lingua_words(text)], word_keep_probs(model, tok, text)))
    assert set(got) == {"the", "cat", "sat", "on", "mat", "cats", ".", "so"}
    assert got["cat"] == max(got.values())
    assert all(v < got["cat"] - 0.01 for k, v in got.items() if k != "cat")
    p_cat, p_s, p_dots = token_probs_alone(model, tok, ["▁cat", "s", "..."])
    assert got["cat"] == pytest.approx(p_cat, abs=1e-5)
    assert got["cats"] == pytest.approx((p_cat + p_s) / 2, abs=1e-5)  # mean over the word's tokens
    assert got["."] == pytest.approx(p_dots, abs=1e-5)  # each "." of the one token "..." gets its probability


def test_load_classifier_bad_path_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(OSError, match="internet.*local folder"):
            load_classifier(str(path), device="cpu")
