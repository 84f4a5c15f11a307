"""The run viewer: one self-contained HTML page, checked as text and in headless Chromium."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from src.analysis.viewer import render_viewer, write_viewer

SPECIAL = "<script>alert(1)</script>"
BREAKOUT = '</script><b>bold</b> & "quotes"'


def _rec(rid, units, order, objective=True, question="Q?", **extra):
    n = len(units)
    return {
        "id": rid,
        "method": extra.pop("method", "greedy"),
        "objective": "joint",
        "pruner": "test",
        "n_reasoning_tokens": n,
        "reasoning_tokens": units,
        "deletion_order": order,
        "step_objective": [-10.0 - 0.5 * k for k in range(len(order) + 1)] if objective else [],
        "step_perplexity": [],
        "pruned": {},
        "cost": {},
        "question": question,
        "reasoning": "".join(units),
        "answer": "42",
        **extra,
    }


PLAIN = ["Two", " weeks", " have", " 2", " *", " 7", " =", " 14", " days", "."]  # n = 10
UNICODE = ["Café", " 中文", " 🙂", " naïve", " ∑x", "\n", "done"]  # n = 7
SPECIAL_UNITS = ["a ", SPECIAL, " ", BREAKOUT, " <!-- c -->", " \u2028x\u2029", " end"]  # n = 7


def _runs():
    greedy = [
        _rec("plain", PLAIN, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
        _rec("uni", UNICODE, [5, 4, 3, 2, 1, 0, 6], question="Qué 中文 🙂?"),
        _rec("special", SPECIAL_UNITS, [0, 2, 4, 6, 1, 3, 5], question=SPECIAL + " see https://example.com"),
        _rec("short", PLAIN, [0, 1, 2]),  # pruning stopped early: only 3 of 10 deletions recorded
    ]
    uniform = [
        _rec("plain", PLAIN, [0, 2, 4, 6, 8, 1, 3, 5, 7, 9], objective=False, method="uniform"),
        _rec("special", SPECIAL_UNITS, [6, 5, 4, 3, 2, 1, 0], objective=False, method="uniform"),
    ]
    categories = {"greedy": {"plain": ["EntName", "EntName", "Grammar", "SymbMath", "SymbMath"] * 2}}
    return {"greedy": greedy, "uniform": uniform}, categories


def _deleted(n, order, k):
    return set(order[: n - math.floor(n * k + 1e-9)])


# --------------------------------------------------------------------------------------------- no browser


def _data_block(page: str) -> str:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert m, "data block missing"
    return m.group(1)


def test_html_self_contained_and_escaped():
    runs, cats = _runs()
    page = render_viewer(runs, cats, title='<i>t</i> & "x"')
    data = _data_block(page)
    # the data block is closed by the first </script>: nothing in it may end it early or open a comment
    for bad in ("</script", "<!--", "<", ">", "&", "\u2028", "\u2029"):
        assert bad not in data
    # it round-trips to the records' text
    d = json.loads(data)
    assert d["runs"]["greedy"]["special"]["u"] == SPECIAL_UNITS
    assert d["runs"]["greedy"]["uni"]["u"] == UNICODE
    assert d["runs"]["uniform"]["plain"]["j"] == []
    assert d["runs"]["greedy"]["plain"]["c"][0] == "EntName"
    # no network references outside the data (the question above carries a URL)
    outside = page.replace(data, "")
    assert "http://" not in outside and "https://" not in outside
    assert not re.search(r"<(link|img|iframe)\b|\bsrc\s*=|@import|url\(", outside, re.I)
    assert "<i>t</i>" not in page and "&lt;i&gt;t&lt;/i&gt;" in page
    assert page.count("</script>") == 2  # the data block and the one inline script


def test_nonfinite_objective_and_write(tmp_path):
    rec = _rec("nan", PLAIN[:3], [0, 1])
    rec["step_objective"] = [-1.0, float("nan"), float("inf")]
    path = write_viewer(tmp_path / "sub" / "v.html", {"g": [rec]})
    d = json.loads(_data_block(path.read_text(encoding="utf-8")))
    assert d["runs"]["g"]["nan"]["j"] == [-1.0, None, None]


# --------------------------------------------------------------------------------------------- browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    if CHROMIUM is None:
        pytest.skip("no Chromium executable")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        except Exception as e:  # noqa: BLE001 - an unusable browser is a skip, not a failure
            pytest.skip(f"Chromium does not launch: {e}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def viewer_file(tmp_path_factory):
    runs, cats = _runs()
    return write_viewer(tmp_path_factory.mktemp("viewer") / "viewer.html", runs, cats)


def _open(browser, path):
    pg = browser.new_page()
    events = {"requests": [], "dialogs": [], "errors": []}
    pg.on("request", lambda r: events["requests"].append(r.url))
    pg.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: events["errors"].append(str(e)))
    pg.goto(path.as_uri())
    pg.wait_for_selector("#chain .tok")
    return pg, events


def _close(pg, events, path):
    assert not events["dialogs"], events["dialogs"]
    assert not events["errors"], events["errors"]
    assert events["requests"] == [path.as_uri()], events["requests"]  # no network: only the file itself
    pg.close()


@pytest.fixture
def page(browser, viewer_file):
    pg, events = _open(browser, viewer_file)
    yield pg
    _close(pg, events, viewer_file)


def _set_keep(pg, k):
    pg.locator("input#keep").evaluate(
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", str(k)
    )


def _deleted_on_page(pg):
    return set(pg.eval_on_selector_all("#chain .tok.deleted", "els => els.map(e => +e.dataset.i)"))


def _pick(pg, rid, run=None):
    pg.select_option("select#record", rid)
    if run is not None:
        pg.select_option("select#method", run)


def test_slider_marks_deletion_prefix(page):
    _pick(page, "plain", "greedy")
    assert page.locator("#chain .tok").count() == len(PLAIN)
    assert page.input_value("input#keep") == "1"
    assert _deleted_on_page(page) == set()
    assert "kept 10 / 10" in page.text_content("#status")
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    for k in (0.5, 0.33, 0.9, 0.0, 0.71):
        _set_keep(page, k)
        assert _deleted_on_page(page) == _deleted(10, order, k), k
    _set_keep(page, 0.5)
    assert "kept 5 / 10" in page.text_content("#status")
    # the curve has a marker at step 5 and the line plot
    assert page.locator("svg#curve path.line").count() == 1
    assert page.locator("svg#curve circle.marker").count() == 1
    assert page.is_hidden("#curve-note")
    # categories: coloured spans and a legend
    assert page.get_attribute('#chain .tok[data-i="0"]', "data-cat") == "EntName"
    assert "SymbMath" in page.text_content("#legend")


def test_method_switch_changes_deletions(page):
    _pick(page, "plain", "greedy")
    _set_keep(page, 0.5)
    greedy = _deleted_on_page(page)
    assert greedy == {9, 8, 7, 6, 5}
    page.select_option("select#method", "uniform")
    assert page.input_value("input#keep") == "0.5"
    uniform = _deleted_on_page(page)
    assert uniform == _deleted(10, [0, 2, 4, 6, 8, 1, 3, 5, 7, 9], 0.5) != greedy
    # static ranking: no curve, a note instead
    assert page.is_visible("#curve-note")
    assert "no objective recorded (static ranking)" in page.text_content("#curve-note")
    # the method switcher offers only runs holding the record
    _pick(page, "uni")
    assert page.eval_on_selector_all("select#method option", "os => os.map(o => o.value)") == ["greedy"]


def test_short_deletion_order(page):
    _pick(page, "short", "greedy")
    _set_keep(page, 0.2)  # asks for 8 deletions; 3 recorded
    assert _deleted_on_page(page) == {0, 1, 2}
    assert "kept 7 / 10" in page.text_content("#status")
    assert "only 3" in page.text_content("#note")
    _set_keep(page, 0.8)  # 2 deletions: within the recorded order
    assert _deleted_on_page(page) == {0, 1}
    assert page.text_content("#note") == ""


def test_special_and_unicode_text_render_literally(page):
    _pick(page, "special", "greedy")
    chain = page.text_content("#chain")
    assert chain == "".join(SPECIAL_UNITS)
    assert SPECIAL in chain and BREAKOUT in chain
    assert page.locator("#chain b").count() == 0 and page.locator("#chain script").count() == 0
    assert page.locator("#chain .tok").count() == len(SPECIAL_UNITS)
    assert page.text_content('#chain .tok[data-i="1"]') == SPECIAL
    assert SPECIAL in page.text_content("#question")
    assert page.locator("select#record option", has_text="special").count() == 1
    _pick(page, "uni")
    assert page.text_content("#chain") == "".join(UNICODE)
    assert "Qué 中文 🙂?" == page.text_content("#question")
    assert page.text_content('#chain .tok[data-i="2"]') == " 🙂"


def test_long_chain(browser, tmp_path):
    n = 2000
    units = [f" w{i}" for i in range(n)]
    order = [(7 * i) % n for i in range(1500)]  # 7 is coprime to 2000: a permutation prefix
    path = write_viewer(tmp_path / "long.html", {"greedy": [_rec("long", units, order)]})
    pg, events = _open(browser, path)
    assert pg.locator("#chain .tok").count() == n
    ms = pg.evaluate(
        """() => { const k = document.getElementById('keep'), t = performance.now();
        for (let i = 0; i < 100; i++) { k.value = String((i * 37 % 101) / 100); k.dispatchEvent(new Event('input')); }
        return performance.now() - t; }"""
    )
    assert ms < 2000
    for k in (0.0, 0.3, 1.0, 0.42):
        _set_keep(pg, k)
        assert _deleted_on_page(pg) == _deleted(n, order, k), k
    _close(pg, events, path)
