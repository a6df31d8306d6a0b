"""Issue 19's reproductions, as a new user hits them: each gives the right answer or a HardwareWarning that names
the layer, the count and what to do (never a plausible wrong number without a word)."""
import warnings

import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm.config import FORMATS_8
from hwnorm.torch import HardwareWarning, to_hardware

OUT_LSB = FORMATS_8["out_fmt"].lsb


def hardware_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, HardwareWarning)]


def test_a_gamma_beyond_the_default_gamma_format_is_held_by_a_wider_format_and_said():
    bn = nn.BatchNorm2d(1).eval()
    bn.weight.data[:] = 3.0                                     # s8.6 holds at most 1.98
    x = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    with torch.no_grad():
        ref = bn(x)
    with pytest.warns(HardwareWarning, match=r"gamma_fmt s8.6 .* largest \|gamma\| = 3: widened to s8.5"), \
            to_hardware(bn, backend="golden", fmt="s8") as hw:
        hw.calibrate([x])
        with torch.no_grad():
            y = bn(x)
    assert hw.layers[""].config.gamma_fmt.frac == 5
    assert (y - ref).abs().max() <= OUT_LSB                     # was 0.656x float
    assert hw.report()[""]["clamped"] == 0


def test_a_gamma_format_the_user_fixed_is_kept_and_its_clamp_is_counted_and_warned_once():
    bn = nn.BatchNorm2d(1).eval()
    bn.weight.data[:] = 3.0
    x = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with to_hardware(bn, backend="golden", fmt=dict(FORMATS_8)) as hw, torch.no_grad():
            hw.calibrate([x])
            bn(x)
            bn(x)
    said = [m for m in hardware_warnings(rec) if "gamma entries" in m]
    assert len(said) == 1 and "layer '' (BatchNorm2d): 1 of 1 gamma entries (largest |gamma| = 3)" in said[0]
    assert "gamma_fmt" in said[0] and "wider format" in said[0]
    assert hw.report()[""]["clamped"] == 2                     # one entry, two calls


def _readme_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)).train()


def test_calibrate_runs_the_model_in_its_own_mode_so_training_inputs_are_not_clipped():
    m, x = _readme_cnn(), torch.rand(64, 1, 8, 8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.random.get_rng_state()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with to_hardware(m, backend="golden") as hw:
            hw.calibrate([x[:32], x[32:]])                      # ranges over several batches, train() like the model
            assert m.training and torch.equal(torch.random.get_rng_state(), rng)
            assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())   # running statistics untouched
            m(x)
    row = hw.report()["4"]
    assert row["saturated_in"] <= 0.01 * row["values"]          # was 15% (ranges from eval())
    assert not [w for w in hardware_warnings(rec) if "saturated" in w]


def test_calibrating_in_the_wrong_mode_clips_training_inputs_and_says_so():
    m, x = _readme_cnn(), torch.rand(64, 1, 8, 8)
    with pytest.warns(HardwareWarning, match=r"layer '4' \(BatchNorm2d\): \d+ of 65536 input values \([\d.]+%\) "
                                             r"saturated.*calibrate\(\.\.\., mode=\)"):
        with to_hardware(m, backend="golden") as hw:
            hw.calibrate([x], mode="eval")
            m(x)
    assert hw.report()["4"]["saturated_in"] > 0.05 * hw.report()["4"]["values"]
    with pytest.raises(ValueError, match=r"mode='training' is not supported: allowed train, eval or None"):
        hw.calibrate([x], mode="training")


def test_inputs_far_beyond_the_calibrated_range_warn_with_the_count():
    m, x = _readme_cnn().eval(), torch.rand(64, 1, 8, 8)
    with to_hardware(m, backend="golden") as hw:
        hw.calibrate([x])
        with pytest.warns(HardwareWarning, match=r"layer '1' \(BatchNorm2d\): 32768 of 32768 input values \(100%\)"):
            m(x * 1e6)
    assert hw.report()["1"]["saturated_in"] == 32768


def test_the_saturation_threshold_is_settable_and_checked():
    m, x = _readme_cnn().eval(), torch.rand(64, 1, 8, 8)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with to_hardware(m, backend="golden", warn_saturation=1.0) as hw:
            hw.calibrate([x])
            m(x * 1e6)                                           # counted, not warned: the user asked for that
    assert not [w for w in hardware_warnings(rec) if "saturated" in w] and hw.report()["1"]["saturated_in"] == 32768
    with pytest.raises(ValueError, match=r"warn_saturation=1.5 is out of range: allowed a share .* in \[0, 1\]"):
        to_hardware(m, backend="golden", warn_saturation=1.5)


def test_calibrating_on_zeros_or_missing_a_layer_is_said():
    m = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2)).eval()
    with pytest.warns(HardwareWarning, match=r"layer '1': calibrate\(\) saw only zeros at this layer .* falls back"), \
            to_hardware(m, backend="golden") as hw:
        hw.calibrate([torch.zeros(8, 1, 8, 8)])
    assert hw.layers["1"].in_max == 1.0
    branchy = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3))
    branchy.forward = lambda x: branchy[0](x)                   # the second layer is never reached
    with pytest.warns(HardwareWarning, match=r"layer '1': calibrate\(\) never reached this layer"), \
            to_hardware(branchy, backend="golden") as hw:
        hw.calibrate([torch.randn(4, 3)])


def test_an_output_format_that_saturates_warns_with_what_to_do():
    m, x = _readme_cnn().eval(), torch.rand(64, 1, 8, 8)
    with to_hardware(m, backend="golden", fmt="s8.9") as hw:
        hw.calibrate([x])
        with pytest.warns(HardwareWarning, match=r"layer '1' \(BatchNorm2d\): \d+ of 32768 outputs .* out_fmt s8.9 holds "
                                                 r"\[-0.25, 0.248\]: pass a format with more integer bits"):
            m(x)


def _encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()


def test_a_transformer_encoders_layernorms_carry_values_in_eval_under_no_grad():
    enc, x = _encoder(), torch.randn(3, 5, 8)
    with torch.no_grad():
        ref = enc(x)
    assert torch.backends.mha.get_fastpath_enabled()
    with to_hardware(enc, backend="golden") as hw, torch.no_grad():
        hw.calibrate([x])
        assert not torch.backends.mha.get_fastpath_enabled()    # held off while the session routes its LayerNorms
        y = enc(x)
    assert torch.backends.mha.get_fastpath_enabled()            # and given back
    norms = [n for n, mod in enc.named_modules() if isinstance(mod, nn.LayerNorm)]
    assert len(norms) == 4 and all(hw.report()[n]["calls"] == 1 for n in norms)
    assert not torch.equal(y, ref) and (y - ref).abs().max() < 0.2    # the hardware's rounding, not float, not noise


def test_a_routed_layer_no_call_reaches_is_said_after_the_models_first_forward():
    class Bypass(nn.Module):                                    # a model that reads its norm's weights itself
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(4)

        def forward(self, x):
            return nn.functional.layer_norm(x, (4,), self.norm.weight, self.norm.bias)

    m = Bypass()
    with pytest.warns(HardwareWarning, match=r"layer 'norm' \(LayerNorm\): routed to hardware but not called"), \
            to_hardware(m, backend="golden") as hw:
        hw.calibrate([torch.randn(2, 4)])
        m(torch.randn(2, 4))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_torch_compile_runs_the_routed_layers_as_graph_breaks(mode):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), hn.RangeBatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 36, 3), nn.LayerNorm(3)).train(mode == "train")
    x = torch.randn(8, 1, 6, 6)
    with to_hardware(m, backend="golden") as hw:
        hw.calibrate([x])
        y0 = m(x)
        y0.sum().backward()
        g0 = m[0].weight.grad.clone()
        m.zero_grad()
        calls = hw.report()["1"]["calls"]
        y1 = torch.compile(m, backend="eager")(x)
        y1.sum().backward()
    assert hw.report()["1"]["calls"] == calls + 1 and hw.report()["5"]["calls"] == calls + 1
    assert torch.equal(y0, y1) and torch.equal(g0, m[0].weight.grad)


def test_a_model_compiled_before_routing_is_routed_and_float_again_after_restore():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), hn.RangeBatchNorm2d(4), nn.ReLU()).eval()
    x = torch.randn(8, 1, 6, 6)
    compiled = torch.compile(m, backend="eager")
    with torch.no_grad():
        y_float = compiled(x)
        with to_hardware(m, backend="golden") as hw:
            hw.calibrate([x])
            y_hw = compiled(x)
        y_after = compiled(x)
    assert hw.report()["1"]["calls"] == 1 and not torch.equal(y_hw, y_float) and (y_hw - y_float).abs().max() < 0.1
    assert torch.equal(y_after, y_float)


@pytest.mark.parametrize("gamma, widened", [(-2.0, False), (1.99, False), (1.995, True), (-2.01, True)])
def test_gamma_format_is_widened_only_when_a_code_would_clip(gamma, widened):
    """s8.6 holds codes -128..127: -2.0 is code -128 and 1.99 rounds to 127, so neither widens the format (nor
    loses the other gammas a fraction bit); 1.995 rounds to 128 and -2.01 to -129, which would clip."""
    m = nn.Sequential(nn.BatchNorm1d(3))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([gamma, -0.046875, 0.5]))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with to_hardware(m, backend="golden", fmt="s8") as hw:
            fmt = hw.layers["0"].param_config.gamma_fmt
    assert (fmt != FORMATS_8["gamma_fmt"]) == widened, fmt
    assert any("widened" in str(w.message) for w in seen) == widened


def test_range_bn_on_fewer_values_than_chunks_says_why_it_saturates():
    """Range BN with n <= chunks in training: sigma_hat = eps alone (C(1) = 0), so the datapath saturates; the warning
    names the cause and the fix, once per layer (a layer with n > chunks says nothing of the kind)."""
    m = nn.Sequential(hn.RangeBatchNorm1d(3, chunks=10))
    with to_hardware(m, backend="golden") as hw:
        hw.calibrate([torch.randn(64, 3)])
        with warnings.catch_warnings(record=True) as first:
            warnings.simplefilter("always")
            m(torch.randn(4, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("error", HardwareWarning)       # once per layer: the next call is quiet
            m(torch.randn(4, 3))
    said = [str(w.message) for w in first]
    assert any("4 values per channel in training, chunks=10: every chunk holds one value" in t and "use chunks < 4" in t
               for t in said), said
    assert any("12 of 12 outputs (100%) saturated" in t for t in said), said
    big = nn.Sequential(hn.RangeBatchNorm1d(3, chunks=10))
    with to_hardware(big, backend="golden") as hw, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        hw.calibrate([torch.randn(64, 3)])
        big(torch.randn(64, 3))
    assert not any("every chunk holds one value" in str(w.message) for w in seen)
