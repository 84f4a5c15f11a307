"""A self-contained HTML viewer for pruning runs.

``render_viewer`` turns the JSONL records of one or more runs (greedy, hybrid, baselines, ...) into ONE HTML page with
inline CSS and JS and no network access. Per chain (records are matched across runs by ``id``) it shows the question,
the reasoning units as spans (coloured by category when categories are given), a keep-fraction slider that greys out
and strikes through the units deleted at that keep fraction, a method switcher among the runs that hold the chain, and
the objective curve (``step_objective`` against deletions) with a marker at the slider's step.

Keep fraction k keeps ``floor(n * k + 1e-9)`` units: the first ``n - kept`` entries of ``deletion_order`` are deleted;
units beyond the recorded order stay kept (the page says so when the slider asks for more deletions than recorded).

The data travels as JSON in ``<script type="application/json" id="data">`` with ``<``, ``>``, ``&`` and U+2028/2029
escaped, so record text cannot end the script element; the JS inserts unit text with ``textContent`` only.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = ["CATEGORY_COLOURS", "render_viewer", "write_viewer"]

# Okabe-Ito palette (colour-blind friendly), one distinct colour per category.
CATEGORY_COLOURS: dict[str, str] = {
    "SymbMath": "#0072B2",  # blue
    "VerbalMath": "#E69F00",  # orange
    "EntName": "#009E73",  # bluish green
    "CoRef": "#CC79A7",  # reddish purple
    "MetaDisc": "#56B4E9",  # sky blue
    "Grammar": "#F0E442",  # yellow
}
# For categories outside the six above (still distinguishable from them).
_EXTRA_COLOURS = ["#D55E00", "#999999", "#882255", "#44AA99", "#117733", "#332288", "#AA4499", "#DDCC77"]

_KEEP_FIELDS = ("method", "objective", "pruner", "question", "answer")


def _finite(x: Any) -> float | None:
    """JSON.parse rejects NaN/Infinity: map non-finite or non-numeric values to null."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _slim(rec: dict, cats: list | None) -> dict:
    """The fields the page needs, normalised (units, order, curve, categories)."""
    units = rec.get("reasoning_tokens")
    if units is None:
        units = [rec.get("reasoning") or ""]
    units = ["" if u is None else str(u) for u in units]
    n = len(units)
    order, seen = [], set()
    for i in rec.get("deletion_order") or []:
        i = int(i)
        if 0 <= i < n and i not in seen:  # ignore out-of-range / repeated indices rather than break the page
            seen.add(i)
            order.append(i)
    out: dict[str, Any] = {
        "u": units,
        "d": order,
        "j": [_finite(v) for v in rec.get("step_objective") or []],
    }
    for f in _KEEP_FIELDS:
        v = rec.get(f)
        if v is not None:
            out[f] = v if isinstance(v, str) else str(v)
    if rec.get("n_reasoning_tokens") is not None and int(rec["n_reasoning_tokens"]) != n:
        out["n_declared"] = int(rec["n_reasoning_tokens"])
    if cats is not None:
        c = [None if x is None else str(x) for x in list(cats)[:n]]
        out["c"] = c + [None] * (n - len(c))
    return out


def _json_for_script(obj: Any) -> str:
    """JSON that is safe inside a <script> element: no `<`, `>`, `&`, U+2028 or U+2029 survive literally."""
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return (
        s.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _payload(runs: dict[str, list[dict]], categories: dict[str, dict[str, list[str]]] | None) -> dict:
    categories = categories or {}
    ids: list[str] = []
    seen_ids: set[str] = set()
    data_runs: dict[str, dict[str, dict]] = {}
    used_cats: list[str] = []
    for label, records in runs.items():
        label = str(label)
        by_id: dict[str, dict] = {}
        run_cats = categories.get(label) or {}
        for rec in records:
            rid = str(rec.get("id"))
            if rid in by_id:  # duplicate id within a run: the first one wins
                continue
            cats = run_cats.get(rid)
            if cats is None and rec.get("id") in run_cats:
                cats = run_cats[rec.get("id")]
            slim = _slim(rec, cats)
            by_id[rid] = slim
            for c in slim.get("c") or []:
                if c is not None and c not in used_cats:
                    used_cats.append(c)
            if rid not in seen_ids:
                seen_ids.add(rid)
                ids.append(rid)
        data_runs[label] = by_id
    palette = {c: CATEGORY_COLOURS[c] for c in CATEGORY_COLOURS if c in used_cats}
    extra = iter(_EXTRA_COLOURS)
    for c in used_cats:
        if c not in palette:
            palette[c] = next(extra, "#777777")
    return {"ids": ids, "runs": data_runs, "labels": list(data_runs), "palette": palette}


def render_viewer(
    runs: dict[str, list[dict]],
    categories: dict[str, dict[str, list[str]]] | None = None,
    title: str = "greedy-prune viewer",
) -> str:
    """One self-contained HTML document (inline CSS and JS, no network) viewing ``runs``.

    ``runs`` maps a run label to its records (matched across runs by ``id``); ``categories`` optionally maps a run
    label to record id to one category per unit of that run's record.
    """
    data = _json_for_script(_payload(runs, categories))
    fill = {"TITLE": html.escape(title, quote=True), "DATA": data}
    return re.sub(r"@@(TITLE|DATA)@@", lambda m: fill[m.group(1)], _TEMPLATE)  # one pass: data is never re-scanned


def write_viewer(
    path: str | Path,
    runs: dict[str, list[dict]],
    categories: dict[str, dict[str, list[str]]] | None = None,
    title: str = "greedy-prune viewer",
) -> Path:
    """Write ``render_viewer(runs, categories, title)`` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_viewer(runs, categories, title), encoding="utf-8")
    return path


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
  content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>@@TITLE@@</title>
<style>
:root { --fg:#1b1b1b; --muted:#6b6b6b; --bg:#fafafa; --panel:#fff; --line:#ddd; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg);
  background:var(--bg); }
header { position:sticky; top:0; z-index:2; background:var(--panel); border-bottom:1px solid var(--line);
  padding:8px 14px; display:flex; flex-wrap:wrap; gap:10px 18px; align-items:center; }
header h1 { font-size:15px; margin:0 8px 0 0; }
header label { display:flex; gap:6px; align-items:center; }
#record { max-width:42ch; }
#filter { width:14ch; }
#keep { width:220px; }
#keepval { font-variant-numeric:tabular-nums; min-width:3.2em; display:inline-block; }
main { padding:12px 14px; display:grid; grid-template-columns:minmax(0,1fr) 420px; gap:14px; }
@media (max-width: 1000px) { main { grid-template-columns:minmax(0,1fr); } }
section { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
h2 { font-size:12px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); margin:0 0 6px; }
#question, #answer { white-space:pre-wrap; }
#meta { color:var(--muted); font-size:12px; }
#status { font-variant-numeric:tabular-nums; }
#note { color:#a33; font-size:12px; }
#chain { white-space:pre-wrap; word-wrap:break-word;
  font:13px/1.7 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
.tok { border-radius:2px; }
.tok:hover { outline:1px solid var(--accent); }
.tok.deleted { color:#b0b0b0; text-decoration:line-through; text-decoration-color:#999; background:none !important;
  border-bottom-color:transparent !important; }
#chain.hide .tok.deleted { display:none; }
#legend { display:flex; flex-wrap:wrap; gap:4px 12px; font-size:12px; margin-bottom:6px; }
#legend .sw { display:inline-block; width:12px; height:12px; border-radius:2px; vertical-align:-2px; margin-right:4px;
  border:1px solid rgba(0,0,0,.25); }
#curve { width:100%; height:auto; display:block; }
#side { position:sticky; top:64px; align-self:start; }
#curve .axis { stroke:#999; stroke-width:1; }
#curve .line { fill:none; stroke:var(--accent); stroke-width:1.5; }
#curve .cursor { stroke:#D55E00; stroke-width:1; stroke-dasharray:3 3; }
#curve .marker { fill:#D55E00; stroke:#fff; stroke-width:1.5; }
#curve text { font-size:11px; fill:#555; }
#curve-note { color:var(--muted); font-style:italic; }
.hidden { display:none !important; }
</style>
</head>
<body>
<header>
  <h1 id="title">@@TITLE@@</h1>
  <label>record <input id="filter" type="search" placeholder="filter…" aria-label="filter records">
    <select id="record" aria-label="record"></select></label>
  <label>method <select id="method" aria-label="method"></select></label>
  <label>keep <input id="keep" type="range" min="0" max="1" step="0.01" value="1" aria-label="keep fraction">
    <span id="keepval">1.00</span></label>
  <span id="status"></span>
  <label><input id="hide-deleted" type="checkbox"> hide deleted</label>
  <span id="note"></span>
</header>
<main>
  <div>
    <section><h2>Question</h2><div id="question"></div></section>
    <section style="margin-top:12px"><h2>Reasoning</h2><div id="meta"></div><div id="legend"></div>
      <div id="chain"></div></section>
    <section style="margin-top:12px"><h2>Answer</h2><div id="answer"></div></section>
  </div>
  <div id="side">
    <section><h2>Objective</h2>
      <svg id="curve" viewBox="0 0 400 240" role="img" aria-label="objective against deletions"></svg>
      <div id="curve-note" class="hidden">no objective recorded (static ranking)</div>
    </section>
  </div>
</main>
<script type="application/json" id="data">@@DATA@@</script>
<script>
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
    var $ = function (id) { return document.getElementById(id); };
  var recSel = $("record"), methSel = $("method"), keep = $("keep"), chain = $("chain"), svg = $("curve");
  var SVGNS = svg.namespaceURI;  // the SVG namespace, without spelling out a URL
  var cur = { id: null, run: null, rec: null, spans: [], applied: 0, marker: null, cursor: null, xs: null, ys: null };

  function has(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }
  function runsFor(id) { return D.labels.filter(function (l) { return has(D.runs[l], id); }); }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
  function opt(value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text; return o;
  }
  function questionOf(id) {
    var ls = runsFor(id);
    for (var k = 0; k < ls.length; k++) { var q = D.runs[ls[k]][id].question; if (q) return q; }
    return "";
  }

  function fillRecords(filter) {
    var f = (filter || "").toLowerCase(), keepId = recSel.value;
    clear(recSel);
    D.ids.forEach(function (id) {
      var q = questionOf(id).replace(/\s+/g, " ");
      var text = id + (q ? " \u2014 " + (q.length > 70 ? q.slice(0, 70) + "\u2026" : q) : "");
      if (f && text.toLowerCase().indexOf(f) < 0) return;
      recSel.appendChild(opt(id, text));
    });
    var still = Array.prototype.some.call(recSel.options, function (o) { return o.value === keepId; });
    if (keepId && still) recSel.value = keepId;
  }

  function fillMethods(id, prefer) {
    var ls = runsFor(id);
    clear(methSel);
    ls.forEach(function (l) {
      var r = D.runs[l][id];
      methSel.appendChild(opt(l, r.method && r.method !== l ? l + " (" + r.method + ")" : l));
    });
    methSel.value = ls.indexOf(prefer) >= 0 ? prefer : ls[0];
    return methSel.value;
  }

  function legend(rec) {
    var el = $("legend"); clear(el);
    if (!rec.c) { el.classList.add("hidden"); return; }
    el.classList.remove("hidden");
    var present = {};
    rec.c.forEach(function (c) { if (c != null) present[c] = (present[c] || 0) + 1; });
    Object.keys(D.palette).forEach(function (c) {
      if (!present[c]) return;
      var item = document.createElement("span"), sw = document.createElement("span");
      sw.className = "sw"; sw.style.background = D.palette[c];
      item.appendChild(sw); item.appendChild(document.createTextNode(c + " (" + present[c] + ")"));
      el.appendChild(item);
    });
  }

  function hexA(hex, a) {
    var v = parseInt(hex.slice(1), 16);
    return "rgba(" + ((v >> 16) & 255) + "," + ((v >> 8) & 255) + "," + (v & 255) + "," + a + ")";
  }

  function buildChain(rec) {
    clear(chain);
    var n = rec.u.length, rank = new Array(n), frag = document.createDocumentFragment(), spans = new Array(n);
    for (var k = 0; k < rec.d.length; k++) rank[rec.d[k]] = k + 1;
    for (var i = 0; i < n; i++) {
      var s = document.createElement("span");
      s.className = "tok";
      s.setAttribute("data-i", String(i));
      s.textContent = rec.u[i];
      var tip = "#" + i + (rank[i] ? " \u00b7 deleted at step " + rank[i] : " \u00b7 never deleted");
      if (rec.c && rec.c[i] != null) {
        var col = D.palette[rec.c[i]] || "#777777";
        s.style.background = hexA(col, 0.28);
        s.style.borderBottom = "2px solid " + col;
        s.setAttribute("data-cat", rec.c[i]);
        tip += " \u00b7 " + rec.c[i];
      }
      s.title = tip;
      spans[i] = s;
      frag.appendChild(s);
    }
    chain.appendChild(frag);
    return spans;
  }

  function svgEl(name, attrs, text) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }

  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(2); }

  function buildCurve(rec) {
    clear(svg);
    cur.marker = cur.cursor = cur.xs = cur.ys = null;
    var j = rec.j, note = $("curve-note");
    var vals = j.filter(function (v) { return v != null; });
    if (!j.length || !vals.length) { svg.classList.add("hidden"); note.classList.remove("hidden"); return; }
    svg.classList.remove("hidden"); note.classList.add("hidden");
    var W = 400, H = 240, L = 52, R = 10, T = 10, B = 34;
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    if (hi - lo < 1e-12) { lo -= 1; hi += 1; }
    var pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
    var last = Math.max(j.length - 1, 1);
    var X = function (k) { return L + (W - L - R) * k / last; };
    var Y = function (v) { return T + (H - T - B) * (hi - v) / (hi - lo); };
    svg.appendChild(svgEl("line", { "class": "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    svg.appendChild(svgEl("line", { "class": "axis", x1: L, y1: T, x2: L, y2: H - B }));
    svg.appendChild(svgEl("text", { x: L - 4, y: T + 10, "text-anchor": "end" }, fmt(hi - pad)));
    svg.appendChild(svgEl("text", { x: L - 4, y: H - B, "text-anchor": "end" }, fmt(lo + pad)));
    svg.appendChild(svgEl("text", { x: L, y: H - B + 14, "text-anchor": "middle" }, "0"));
    svg.appendChild(svgEl("text", { x: W - R, y: H - B + 14, "text-anchor": "end" }, String(j.length - 1)));
    svg.appendChild(svgEl("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "deletions"));
    svg.appendChild(svgEl("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle",
      transform: "rotate(-90 12 " + (T + H - B) / 2 + ")" }, "J (nats)"));
    var d = "", pen = false;
    for (var k = 0; k < j.length; k++) {
      if (j[k] == null) { pen = false; continue; }
      d += (pen ? "L" : "M") + X(k).toFixed(2) + " " + Y(j[k]).toFixed(2);
      pen = true;
    }
    if (j.length === 1) d += "h1";
    svg.appendChild(svgEl("path", { "class": "line", d: d }));
    cur.cursor = svgEl("line", { "class": "cursor", y1: T, y2: H - B });
    cur.marker = svgEl("circle", { "class": "marker", r: 4 });
    cur.markerTip = svgEl("title", {});
    cur.marker.appendChild(cur.markerTip);
    svg.appendChild(cur.cursor); svg.appendChild(cur.marker);
    cur.xs = X; cur.ys = Y;
  }

  function moveMarker(step) {
    if (!cur.marker) return;
    var j = cur.rec.j, k = Math.min(step, j.length - 1), x = cur.xs(k);
    cur.cursor.setAttribute("x1", x); cur.cursor.setAttribute("x2", x);
    if (j[k] == null) { cur.marker.classList.add("hidden"); return; }
    cur.marker.classList.remove("hidden");
    cur.marker.setAttribute("cx", x); cur.marker.setAttribute("cy", cur.ys(j[k]));
    cur.markerTip.textContent = "step " + k + ": J = " + j[k].toFixed(3);
  }

  function keepFrac() { var v = parseFloat(keep.value); return isFinite(v) ? Math.min(1, Math.max(0, v)) : 1; }

  // Only the units whose state changes are touched: O(|delta|) per slider move.
  function applyKeep() {
    var rec = cur.rec; if (!rec) return;
    var k = keepFrac(), n = rec.u.length, kept = Math.floor(n * k + 1e-9);
    var want = n - kept, eff = Math.min(want, rec.d.length), a = cur.applied, i;
    for (i = a; i < eff; i++) cur.spans[rec.d[i]].classList.add("deleted");
    for (i = eff; i < a; i++) cur.spans[rec.d[i]].classList.remove("deleted");
    cur.applied = eff;
    $("keepval").textContent = k.toFixed(2);
    $("status").textContent = "kept " + (n - eff) + " / " + n;
    $("note").textContent = want > rec.d.length
      ? "keep " + k.toFixed(2) + " asks for " + want + " deletions; only " + rec.d.length +
        " recorded \u2014 the remaining units stay kept" : "";
    moveMarker(eff);
  }

  function show(id, run) {
    if (id == null) return;
    run = fillMethods(id, run);
    var rec = D.runs[run][id];
    cur.id = id; cur.run = run; cur.rec = rec; cur.applied = 0;
    $("question").textContent = rec.question || questionOf(id) || "";
    $("answer").textContent = rec.answer || "";
    var meta = [run];
    if (rec.method) meta.push("method " + rec.method);
    if (rec.objective) meta.push("objective " + rec.objective);
    if (rec.pruner) meta.push("pruner " + rec.pruner);
    meta.push(rec.u.length + " units", rec.d.length + " deletions recorded");
    if (rec.n_declared != null) meta.push("n_reasoning_tokens " + rec.n_declared + " \u2260 units");
    $("meta").textContent = meta.join(" \u00b7 ");
    legend(rec);
    cur.spans = buildChain(rec);
    buildCurve(rec);
    applyKeep();
    saveHash();
  }

  function saveHash() {
    try {
      var h = "#id=" + encodeURIComponent(cur.id) + "&run=" + encodeURIComponent(cur.run) + "&keep=" + keep.value;
      if (location.hash !== h) history.replaceState(null, "", h);
    } catch (e) { /* some file:// contexts refuse; the hash is a convenience only */ }
  }

  function loadHash() {
    var out = {};
    (location.hash || "").replace(/^#/, "").split("&").forEach(function (kv) {
      var p = kv.indexOf("=");
      if (p > 0) { try { out[kv.slice(0, p)] = decodeURIComponent(kv.slice(p + 1)); } catch (e) {} }
    });
    return out;
  }

  recSel.addEventListener("change", function () { show(recSel.value, cur.run); });
  methSel.addEventListener("change", function () { show(cur.id, methSel.value); });
  keep.addEventListener("input", applyKeep);
  keep.addEventListener("change", function () { applyKeep(); saveHash(); });
  $("hide-deleted").addEventListener("change", function (e) { chain.classList.toggle("hide", e.target.checked); });
  $("filter").addEventListener("input", function (e) {
    fillRecords(e.target.value);
    if (recSel.value && recSel.value !== cur.id) show(recSel.value, cur.run);
  });

  fillRecords("");
  if (!D.ids.length) { $("status").textContent = "no records"; return; }
  var h = loadHash(), start = D.ids.indexOf(h.id) >= 0 ? h.id : D.ids[0];
  if (h.keep != null && isFinite(parseFloat(h.keep))) keep.value = h.keep;
  recSel.value = start;
  show(start, h.run);
})();
</script>
</body>
</html>
"""
