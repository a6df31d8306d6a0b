"""The tables in docs/ are generated (`make docs`); they must match what the code produces now."""
import pytest

from hwnorm.reports import DOCS
from hwnorm.reports.tables import doc_table_builders


@pytest.mark.parametrize("doc, block", sorted(doc_table_builders()))   # keys only: each test builds its own table
def test_doc_table_is_current(doc, block):
    text = (DOCS / doc).read_text()
    want = doc_table_builders()[(doc, block)]()
    begin, end = f"<!-- {block}:begin -->\n", f"\n<!-- {block}:end -->"
    assert begin in text and end in text, f"docs/{doc} lost its generated {block} block"
    have = text.split(begin, 1)[1].split(end, 1)[0]
    assert have == want, f"docs/{doc} ({block}) is stale: run `make docs`"
