"""Reports: the generated tables of docs/ (tables.py), synthesis (synth.py), docs/results.md (results.py)."""
from .tables import DOCS, doc_tables, latency_table, numerics_table, replace_block

__all__ = ["DOCS", "doc_tables", "latency_table", "numerics_table", "replace_block"]
