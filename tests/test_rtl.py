"""rtl/ must be exactly what the generators emit today (run `make verilog` after changing them)."""
import pytest

from hwnorm.config import default_configs
from hwnorm.emit import RTL_DIR, backward_default_configs, backward_verilog_text, verilog_text


def test_rtl_holds_every_default_config_and_nothing_else():
    assert sorted(p.stem for p in RTL_DIR.glob("*.v")) == sorted([*default_configs(), *backward_default_configs()])


@pytest.mark.parametrize("key", sorted(default_configs()))
def test_rtl_is_not_stale(key):
    cfg = default_configs()[key]
    want = verilog_text(cfg, name=f"hwnorm_{key}")
    have = (RTL_DIR / f"{key}.v").read_text()
    assert have == want, f"rtl/{key}.v is stale: run `make verilog`"
    assert f"module hwnorm_{key}(" in have


@pytest.mark.parametrize("key", sorted(backward_default_configs()))
def test_backward_rtl_is_not_stale(key):
    cfg, gcfg = backward_default_configs()[key]
    want = backward_verilog_text(cfg, gcfg, name=f"hwnorm_{key}")
    have = (RTL_DIR / f"{key}.v").read_text()
    assert have == want, f"rtl/{key}.v is stale: run `make verilog`"
    assert f"module hwnorm_{key}(" in have


def test_per_channel_sequencer_is_marked_one_hot_for_synthesis():
    """ChannelMath's FSM carries fsm_encoding = "one-hot" (its binary decode was the 16-bit critical path), so yosys
    recodes it; without the attribute its FSM pass keeps the register binary."""
    text = (RTL_DIR / "range_s16.v").read_text()
    lines = text.splitlines()
    marked = [i for i, line in enumerate(lines) if 'fsm_encoding = "one-hot"' in line]
    assert marked, "no FSM state register is marked one-hot"
    assert any("fsm_state" in lines[i + 1] for i in marked)
