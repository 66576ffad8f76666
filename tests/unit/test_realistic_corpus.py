"""The corpus builder of bench/realistic_ingest.py on a small Sphinx-like page (no download)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import realistic_corpus as rc

PROSE = "The parser reads every line of the input and keeps the words it finds there. "


def _page(long_words: int, tag: str = "") -> str:
    long_text = " ".join(f"word{i}." if i % 12 == 11 else f"word{i}" for i in range(long_words))
    return f"""<html><head><title>x</title><script>var skip = 1;</script></head><body>
<div class="sphinxsidebar"><p>{PROSE * 5}</p></div>
<section id="json-module"><h1>json — JSON encoder<a class="headerlink" href="#">¶</a></h1>
<p>Intro {tag} explains how this module reads and writes its data. {PROSE * 4}</p>
<div class="highlight"><pre>import json
json.dumps(obj)</pre></div>
<section id="basic-usage"><h2>Basic Usage<a class="headerlink">¶</a></h2>
<dl class="py function"><dt class="sig">json.dump(obj, fp)</dt>
<dd><p>Serialize obj {tag} as a JSON formatted stream to fp. {PROSE * 3}</p></dd></dl>
</section>
<section id="long"><h2>Long</h2><p>{long_text}</p></section>
<section id="tiny"><h2>Tiny</h2><p>Too short.</p></section>
</section></body></html>"""


def test_sections_own_text_without_code_navigation_or_nested_sections() -> None:
    title, sections = rc.parse_sections(_page(40))
    assert title == "json — JSON encoder"
    by_anchor = {s.anchor: s for s in sections}
    assert set(by_anchor) == {"json-module", "basic-usage", "long", "tiny"}
    top = " ".join(by_anchor["json-module"].blocks)
    assert top.startswith("Intro ") and "import json" not in top and "Basic" not in top
    assert "var skip" not in top
    usage = by_anchor["basic-usage"].blocks
    assert usage[0] == "json.dump(obj, fp)" and usage[1].startswith("Serialize obj")
    assert by_anchor["basic-usage"].heading == "Basic Usage"


def test_documents_bounds_titles_and_long_sections_split() -> None:
    docs = list(rc.docs_from_page("library/json", _page(1200)))
    assert all(rc.MIN_WORDS <= d.words <= rc.MAX_WORDS for d in docs)
    assert all(d.words == rc.word_count(d.text) for d in docs)
    ids = [d.id for d in docs]
    assert "library/json#json-module/0" in ids and "library/json#basic-usage/0" in ids
    assert not any("tiny" in i for i in ids)
    long_parts = [d for d in docs if "#long/" in d.id]
    assert len(long_parts) == 3 and all(d.words <= rc.PART_WORDS for d in long_parts)
    assert sum(d.words for d in long_parts) == 1200
    usage = next(d for d in docs if d.id.endswith("#basic-usage/0"))
    assert usage.title == "json — JSON encoder — Basic Usage"


def test_query_documents_hold_out_their_first_sentence() -> None:
    pages = [(f"p{i}", _page(40, f"page{i}")) for i in range(40)]
    docs = rc.build_docs(pages, seed=1)
    assert len({d.id for d in docs}) == len(docs)
    queries = [d for d in docs if d.query]
    assert queries
    for doc in queries:
        assert doc.id.endswith("/0")
        assert doc.query not in doc.text
        assert rc.QUERY_MIN_WORDS <= rc.word_count(doc.query) <= rc.QUERY_MAX_WORDS
        assert doc.words >= rc.MIN_WORDS
    again = rc.build_docs(pages, seed=1)
    assert [(d.id, d.query) for d in again] == [(d.id, d.query) for d in docs]


def test_distribution_summary() -> None:
    summary = rc.distribution([30, 40, 250, 500])
    assert summary["docs"] == 4 and summary["min"] == 30 and summary["max"] == 500
    assert sum(summary["histogram"].values()) == 4
