"""The design contract the code cites lives in the repository: every ``docs/design.md``
section named in a docstring or comment exists, and nothing cites a design file outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r'design\.md[`"]*\s*[,(]\s*\(?"([^"]+)"')


def _sources():
    for folder in ("soma_shm", "tests", "perf"):
        yield from (ROOT / folder).rglob("*.py")


def test_every_cited_design_section_exists():
    headings = {line[3:].strip() for line in (ROOT / "docs" / "design.md").read_text().splitlines()
                if line.startswith("## ")}
    cited = {}
    for path in _sources():
        for section in CITATION.findall(path.read_text()):
            cited.setdefault(" ".join(section.split()), []).append(path.relative_to(ROOT).as_posix())
    assert cited, "no citation found: the pattern no longer matches how the code cites the design"
    missing = {s: where for s, where in cited.items() if s not in headings}
    assert missing == {}, f"sections cited but not in docs/design.md: {missing}"


def test_no_source_cites_a_design_file_outside_the_repository():
    outside = re.compile(r"ENGINE\.md|/shared/design")
    docs = [p for p in ROOT.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    offenders = [p.relative_to(ROOT).as_posix() for p in [*_sources(), *docs]
                 if p != Path(__file__).resolve() and outside.search(p.read_text())]
    assert offenders == []
