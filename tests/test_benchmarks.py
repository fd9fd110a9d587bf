"""Benchmark scripts run end to end in their --quick mode; only properties are checked, never times."""

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO, launcher_env


def run_quick(name: str, tmp_path, *args) -> dict:
    """Runs benchmarks/<name>.py --quick as users do and returns its --json output."""
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, f"benchmarks/{name}.py", "--quick", *args, "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=launcher_env(1), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_nerf_benchmark_quick(tmp_path):
    res = run_quick("nerf", tmp_path, "--repeats", "1")
    for key in ("matmul_gflops", "mlp_fwd_gflops", "mlp_fwd_ratio", "mlp_fwd_bwd_ratio",
                "mlp_fwd_flops_per_point", "mlp_fwd_xla_flops_per_point", "render_fused_rays_per_s",
                "render_staged_rays_per_s", "render_ratio", "train_rays_per_s", "sampling"):
        assert key in res, key
    # nerf_pl's MLP: 595,844 parameters, 2 * 593,408 Dense FLOPs per point forward.
    assert res["mlp_params"] == 595_844
    assert res["mlp_fwd_flops_per_point"] == 2 * 593_408
    s = res["sampling"]
    assert s["reference_half_grid_max_abs_diff"] < 1e-6 and s["reference_acc_max_abs_err"] < 1e-6
    for variant in ("deterministic", "stratified"):
        err = s[variant]
        assert set(err) >= {"uniform_192", "uniform_256", "hier_64_128", "hier_48_96", "uniform_4096"}
        # Property of the sampler on the analytic scene: hierarchical 64 + 128 beats uniform 192.
        assert err["hier_64_128"]["mae"] < err["uniform_192"]["mae"], err
        assert err["hier_64_128"]["rmse"] < err["uniform_192"]["rmse"], err
        # The estimator converges to the reference as samples are added.
        assert err["uniform_4096"]["mae"] < 0.1 * err["uniform_192"]["mae"], err


@pytest.mark.slow
def test_sr_benchmark_quick(tmp_path):
    res = run_quick("sr", tmp_path, "--repeats", "1")
    assert set(res["matmul_peaks"]) == {"fp32", "bf16"}
    # 2 RRDBs: the published 16,697,987 minus 21 RRDBs of 3 dense blocks, each block's five
    # 3x3 convs holding 9 * 32 * (64 + 96 + 128 + 160) + 9 * 192 * 64 weights and 4 * 32 + 64 biases.
    assert res["rrdbnet_blocks"] == 2
    assert res["rrdbnet_params"] == 16_697_987 - 21 * 3 * (9 * 32 * 448 + 9 * 192 * 64 + 4 * 32 + 64)
    rows = res["rrdbnet"]
    assert {(r["dtype"], r["out_side"]) for r in rows} == {("fp32", 32), ("bf16", 32)}
    for r in rows:
        # XLA counts conv taps inside the image only: the analytic in-image count must match it
        # up to the elementwise work it adds (bias, LeakyReLU, residual scaling, casts).
        assert 1.0 <= r["xla_over_analytic"] < 1.03, r
        assert r["analytic_in_image_flops"] < r["analytic_flops"]
        for key in ("out_pixels_per_s", "gflops", "peak_ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["out_pixels_per_s"] == pytest.approx(r["batch"] * r["out_side"] ** 2 / (r["ms"] / 1e3))
    assert math.isfinite(res["gan_over_psnr"]) and res["gan_over_psnr"] > 0
    # The gan step trains the generator and the discriminator; the psnr step the generator only.
    assert res["step_params"]["gan"] > res["step_params"]["psnr"] > 0


@pytest.mark.slow
def test_diffusion_benchmark_quick(tmp_path):
    res = run_quick("diffusion", tmp_path)
    for batch in (4, 32):  # guided sampling measured against unguided, in the same process
        g = res["guidance"][f"batch_{batch}"]
        assert set(g["seconds"]) == {"unguided", "guided_one_call", "guided_two_calls"}
        assert all(v > 0 for v in g["seconds"].values())
        assert g["guided_one_call_over_unguided"] == pytest.approx(
            g["seconds"]["guided_one_call"] / g["seconds"]["unguided"])
    # The adaptive reference solve agrees with the Gaussian's closed-form probability-flow map.
    assert res["gaussian_reference_check"]["adaptive_vs_closed_form_rms"] < 1e-6
    g = res["gaussian"]
    assert set(g) >= {"ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc"}
    # Measured convergence orders on the Gaussian: ~1 for DDIM/Euler, ~2 for DPM-Solver++ 2M,
    # higher for the third-order multistep methods.
    assert 0.8 < g["ddim"]["order"] < 1.2 and 0.8 < g["euler"]["order"] < 1.2
    assert 1.6 < g["dpmpp_2m"]["order"] < 2.5
    assert g["dpmpp_3m"]["order"] > 2.3 and g["unipc"]["order"] > 2.3
    for method in g:  # more steps, smaller error at the largest budgets
        assert g[method]["rms"][-1] < g[method]["rms"][-2], method
    # The Python-loop reference computes the same samples as the scanned samplers.
    assert max(res["python_loop_agreement_max_abs"].values()) < 1e-9
    for m in res["overhead"].values():  # reported, never asserted on: only present and finite
        assert m["scan_us_per_step"] > 0 and m["python_loop_us_per_step"] > 0


@pytest.mark.slow
def test_clip_benchmark_quick(tmp_path):
    res = run_quick("clip", tmp_path)
    assert res["matmul_gflops"] > 0
    for loss in ("softmax", "sigmoid"):
        for tower in ("cnn", "vit"):
            step = res["step"][tower][loss]
            assert step["pairs_per_s"] > 0 and step["batch"] == 32
            assert step["xla_gflop"] is None or 0 < step["peak_ratio"] < 2
        timing = res["loss"][loss]
        assert timing["gathered_ms"] > 0 and timing["local_ms"] > 0
        assert timing["devices"] == 1  # the test's environment fixes one device
