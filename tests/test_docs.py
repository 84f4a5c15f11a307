"""Citations of the design document ("docs/DESIGN.md §n") point at sections it has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"(\S*)DESIGN\.md §(\d+)(?:[–-](\d+))?")


def test_design_citations_name_sections_of_docs_design():
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "DESIGN.md").read_text(), re.M)}
    files = [p for folder in ("exact", "src", "surrogate", "conf", "tests") for p in (ROOT / folder).rglob("*")]
    files += [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    cited = 0
    for path in files:
        if path.suffix not in (".py", ".yaml", ".md") or path.name == "DESIGN.md" or path == Path(__file__):
            continue
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            where = f"{path.relative_to(ROOT)}: {match.group(0)}"
            assert match.group(1).endswith("docs/") or path.parent.name == "docs", f"{where}: cite docs/DESIGN.md"
            first, last = int(match.group(2)), int(match.group(3) or match.group(2))
            assert set(range(first, last + 1)) <= sections, f"{where}: DESIGN.md has sections {sorted(sections)}"
            cited += 1
    assert cited >= 5
