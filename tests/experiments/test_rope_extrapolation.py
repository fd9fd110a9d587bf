"""The RoPE length-extrapolation study: method configs, reports, and the launcher end to end."""

import json
import math

import numpy as np
import pytest

from conftest import REPO

from experiments import rope_extrapolation as study
from jaxzoo.core import rope as rope_lib
from jaxzoo.train import config as config_lib
from jaxzoo.train.config import ConfigError

CONFIG = "experiments/configs/rope_extrapolation.py:cpu"
L = 8
MULTS = (1, 4, 8, 16)
TINY = ["--config.model.num_layers=2", "--config.model.d_model=16", "--config.model.num_heads=2",
        f"--config.seq_len={L}", "--config.total_steps=3", "--config.optim.warmup_steps=1",
        "--config.batch_size=4", "--config.log_every=1", "--config.checkpoint_every=3",
        "--config.eval.max_tokens=256", "--config.eval.batch_tokens=64",
        # w = L: at n <= L every |i - j| < w, so ReRoPE is plain RoPE at 1x.
        f"--config.eval.rerope_window={L}"]


def _table(method, length, train_len=128, head_dim=24, s=16.0):
    changes = study.method_changes(method, train_len, length, s, train_len // 2)
    return rope_lib.rope_frequencies(head_dim, 10000.0, changes.get("rope_scaling"), seq_len=length)


def test_matched_rows_are_the_identity_at_training_length_and_dynamic_is_matched_ntk():
    plain, _ = rope_lib.rope_frequencies(24, 10000.0)
    for method in ("pi_matched", "ntk_matched", "yarn_matched", "dynamic_ntk"):
        inv_freq, attn = _table(method, 128)
        np.testing.assert_allclose(inv_freq, plain, rtol=1e-7, err_msg=method)
        assert attn == 1.0
    for n in (512, 1024, 2048):  # dynamic NTK over a full forward pass is NTK at s = n / L
        np.testing.assert_array_equal(_table("dynamic_ntk", n)[0], _table("ntk_matched", n)[0])
        # closed forms: PI divides by s; NTK multiplies the base by s^(d/(d-2)); YaRN's factor
        np.testing.assert_allclose(_table("pi_matched", n)[0], plain * 128 / n, rtol=1e-6)
        ntk = 1.0 / (10000.0 * (n / 128) ** (24 / 22)) ** (np.arange(0, 24, 2) / 24)
        np.testing.assert_allclose(_table("ntk_matched", n)[0], ntk, rtol=1e-6)
        assert _table("yarn_matched", n)[1] == pytest.approx(0.1 * math.log(n / 128) + 1.0)
    # static rows keep s = 16 at every length, logn and ReRoPE only add their own field
    assert _table("pi", 128)[0][0] == pytest.approx(plain[0] / 16)
    assert study.method_changes("ntk_logn", 128, 512, 16.0, 64)["logn_train_len"] == 128
    assert study.method_changes("rerope", 128, 512, 16.0, 64) == {"rerope_window": 64}
    assert study.method_changes("learned", 128, 512, 16.0, 64) == {}


def test_su_comparison_counts_pairwise_agreement():
    def results(order):  # accuracy rising along `order`
        return {m: {"8x": {"accuracy": 0.1 * (i + 1), "loss": 1.0, "length": 1024}}
                for i, m in enumerate(order)}

    assert study.su_comparison(results(study.SU_RANKING), "8x").endswith("Su's ranking exactly.")
    swapped = study.su_comparison(results(("rope", "pi", "ntk", "ntk_logn", "rerope")), "8x")
    assert "agrees with Su on 9 of 10 pairwise orders (Kendall tau 0.80)" in swapped
    assert "PI beats no scaling (20.00% vs 10.00%" in swapped
    assert study.su_comparison(results(study.SU_RANKING[::-1]), "8x").count("beats") == 10


def test_bad_study_configs_are_clear_errors(tmp_path):
    config = config_lib.load_config(str(REPO / CONFIG))
    config.eval.max_tokens = 3000
    with pytest.raises(ConfigError, match="eval.max_tokens=3000 must be a positive multiple of the "
                                          "longest evaluation length 2048"):
        study.check_config(config)
    config = config_lib.load_config(str(REPO / CONFIG))
    config.encodings = ("rope", "alibi")
    with pytest.raises(ConfigError, match="encodings=\\('rope', 'alibi'\\)"):
        study.check_config(config)
    config = config_lib.load_config(str(REPO / CONFIG))
    config.eval.length_multiples = (4, 1)
    with pytest.raises(ConfigError, match="length_multiples=\\(4, 1\\)"):
        study.check_config(config)
    # A workdir keeps the cells of one study: changing a cell-defining key is refused.
    config = config_lib.load_config(str(REPO / CONFIG))
    study.check_same_study(config, tmp_path)
    config.log_every, config.eval.batch_tokens = 7, 512  # do not change any cell
    study.check_same_study(config, tmp_path)
    config.eval.scale_factor = 8.0
    with pytest.raises(ConfigError, match="different eval.scale_factor"):
        study.check_same_study(config, tmp_path)


@pytest.mark.slow
def test_smoke_every_cell_identities_reports_and_resume(run_launcher, tmp_path):
    run_launcher("experiments.rope_extrapolation", CONFIG, tmp_path, *TINY)
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert list(ev) == list(study.METHODS)
    for method, cells in ev.items():
        assert list(cells) == [f"{k}x" for k in MULTS], method
        for k in MULTS:
            c = cells[f"{k}x"]
            assert c["length"] == k * L and c["tokens"] == 256  # one token budget for every cell
            assert math.isfinite(c["loss"]) and c["loss"] > 0 and 0 <= c["accuracy"] <= 1

    def same(a, b, k=1, tol=0.0):
        for field in ("loss", "accuracy"):
            x, y = ev[a][f"{k}x"][field], ev[b][f"{k}x"][field]
            assert abs(x - y) <= tol, (a, b, k, field, x, y)

    # Identical frequency tables give identical programs: exact agreement.
    same("dynamic_ntk", "rope")  # n = L: dynamic NTK leaves the base alone
    same("pi_matched", "rope")  # factor 1 is the identity
    same("ntk_matched", "rope")
    same("ntk_logn", "ntk")  # logn factor max(1, log(m + 1) / log L) = 1 for every m < L
    for k in MULTS:
        same("dynamic_ntk", "ntk_matched", k)  # full forward pass: NTK at s = n / L
    # Same maths, other arithmetic: YaRN's factor-1 ramp blend, ReRoPE's two-pass kernel (w = L).
    same("yarn_matched", "rope", tol=1e-5)
    same("rerope", "rope", tol=1e-5)
    assert ev["pi"]["1x"]["loss"] != ev["rope"]["1x"]["loss"]  # the static s = 16 is applied
    md = (tmp_path / "results.md").read_text()
    assert "## Comparison with Su's ranking" in md and "| yarn_matched |" in md
    assert (tmp_path / "extrapolation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The same command again, with one row lost from eval.json: the models whose cells are all
    # there are neither restored nor rescored; the RoPE model is restored at its last step (no
    # training step runs) and only the lost row is scored again, to the same values.
    del ev["pi"]
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    proc = run_launcher("experiments.rope_extrapolation", CONFIG, tmp_path, *TINY)
    assert proc.stdout.count("not retraining or rescoring") == 3
    assert proc.stdout.count("resuming at step 3") == 1 and "starting from scratch" not in proc.stdout
    scored = [line.split()[1] for line in proc.stdout.splitlines() if " at " in line and "x = " in line]
    assert scored == ["pi"] * len(MULTS)
    redone = json.loads((tmp_path / "eval.json").read_text())
    assert {m: redone[m] for m in ev} == ev and list(redone) == list(study.METHODS)
