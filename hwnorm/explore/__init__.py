"""`hwnorm explore SPEC`: declarative design-space sweeps (spec.py), cached per point (cache.py), run on Ray or
sequentially (engine.py), measured by measure.py, written as CSV/JSON and Pareto plots (table.py, plots.py)."""
