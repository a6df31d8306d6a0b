"""The generated Verilog under `verilator --lint-only -Wall`: clean with exactly the flags the datasheet states
(hwnorm.toolchain.LINT_WAIVED), so a new warning class fails here; and the one waived class that could hide a defect,
WIDTHTRUNC, fires only for `!x` on a multi-bit x (a logical NOT, Amaranth's x == 0), never for a truncated value."""
import os
import re
import subprocess

import pytest

from hwnorm.config import NormConfig
from hwnorm.core import core_files
from hwnorm.datasheet import lint_flags
from hwnorm.toolchain import LINT_WAIVED, setup_verilator_env

# range (the chunk_size check), cvar with overlap (m, the overlap FSM), and the AXI4-Stream wrapper
CORES = {"edge_core": NormConfig(lanes=4, max_count=300),
         "edge_cvar_overlap": NormConfig(kind="cvar", lanes=2, max_count=1024, overlap=True),
         "edge_axi": NormConfig(kind="l1", lanes=2, max_count=300)}
AXI = {"edge_axi"}


def _lint(tmp_path, name, cfg, flags):
    env = setup_verilator_env(dict(os.environ))
    (tmp_path / f"{name}.v").write_text(core_files(cfg, name, axi=name in AXI)[f"{name}.v"])
    return subprocess.run(["verilator", "--lint-only", *flags, f"{name}.v"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", sorted(CORES))
def test_generated_core_is_lint_clean_with_the_datasheet_flags(tmp_path, name):
    r = _lint(tmp_path, name, CORES[name], lint_flags())
    warnings = sorted(set(re.findall(r"%(?:Warning|Error)-[A-Z]+", r.stderr)))
    assert r.returncode == 0 and not warnings, f"new lint classes {warnings}:\n{r.stderr[-3000:]}"


def test_every_waived_class_fires_and_widthtrunc_is_only_a_logical_not(tmp_path):
    """Each waived class is needed (no stale flag), and no WIDTHTRUNC drops bits of a value."""
    r = _lint(tmp_path, "edge_core", CORES["edge_core"], ["-Wall", "-Wno-fatal"])
    fired = set(re.findall(r"%Warning-([A-Z]+):", r.stderr))
    assert fired == {w for w, _ in LINT_WAIVED}, fired
    trunc = re.findall(r"%Warning-WIDTHTRUNC: [^\n]*", r.stderr)
    assert trunc and all("Logical operator LOGNOT expects 1 bit" in t for t in trunc), trunc


def test_datasheet_states_the_lint_command():
    md = core_files(CORES["edge_core"], "edge_core")["edge_core.md"]
    assert f"verilator --lint-only {' '.join(lint_flags())} edge_core.v" in md
    for w, _ in LINT_WAIVED:
        assert f"`{w}`" in md
