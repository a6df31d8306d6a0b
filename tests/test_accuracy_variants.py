"""Issue 23 item 4: the variants' micro-batch experiment (hwnorm accuracy --variants): its models, plan, a short run
and its summary, and its refused arguments."""
import pytest
import torch

import hwnorm.nn as hnn
from hwnorm.cli import main
from hwnorm.torch import accuracy_variants as V


@pytest.mark.parametrize("dataset", V.DATASETS)
def test_every_variant_builds_the_conv_net_and_runs_a_micro_batch(dataset):
    x = torch.randn(2, 1, 8, 8) if dataset == "digits" else torch.randn(2, 1, 40)
    for variant in V.VARIANT_ROWS:
        m = V.make_model(variant, "l2", dataset)
        assert m(x).shape == (2, 10)
    proxy = V.make_model("proxy", "range", dataset)
    assert not any(isinstance(a, torch.nn.ReLU) for a in proxy)        # the proxy layer holds the activation
    bkn = [mod for mod in V.make_model("bkn", "l2", dataset).modules() if isinstance(mod, hnn.BatchKalmanNorm1d)
           or isinstance(mod, hnn.BatchKalmanNorm2d)]
    assert bkn[0]._prev is None and all(b._prev is a for a, b in zip(bkn, bkn[1:]))


def test_a_short_run_trains_on_golden_counts_host_steps_and_is_summarized_against_its_base(tmp_path):
    rows = [V.run_job(V.VariantJob("digits", v, "l2", 2, 0), steps=4) for v in ("bn", "mbn", "bn_2dom", "dsbn")]
    assert all(r["accuracy"] is not None and 0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert rows[0]["host_steps"] == 0 and rows[1]["host_steps"] > 0
    assert len(rows[3]["accuracy_domains"]) == 2
    summary = {r["variant"]: r for r in V.summarize(rows)}
    assert summary["mbn"]["base"] == "bn" and summary["dsbn"]["base"] == "bn_2dom"
    assert summary["mbn"]["delta"] == pytest.approx(rows[1]["accuracy"] - rows[0]["accuracy"])
    assert "| digits | l2 | 2 | mbn |" in V.format_table({"summary": V.summarize(rows)})


def test_plan_skips_the_mixture_for_kinds_without_it_and_refuses_bad_arguments(capsys):
    jobs = V.plan(datasets=("digits",), kinds=("range",), batches=(2,), seeds=(0,))
    assert {j.variant for j in jobs} == set(V.VARIANT_ROWS) - {"mixture"}
    cvar = V.plan(datasets=("digits",), kinds=("cvar",), batches=(2,), seeds=(0,))
    assert {j.variant for j in cvar} == set(V.VARIANT_ROWS) - {"mixture", "ln", "proxy"}      # no grouped cvar module
    with pytest.raises(ValueError, match=r"kind='semidev' has no proxy row"):
        V.run_job(V.VariantJob("digits", "proxy", "semidev", 2, 0), steps=1)
    with pytest.raises(ValueError, match=r"batch=1 is out of range: allowed an integer >= 2"):
        V.plan(batches=(1,))
    with pytest.raises(ValueError, match=r"variant"):
        V.plan(variants=("gn",))
    assert main(["accuracy", "--variants", "--bits", "4"]) == 2
    assert "--variants with --bits: the variants sweep is its own" in capsys.readouterr().err
