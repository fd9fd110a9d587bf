"""Benchmark scripts run end to end in their --quick mode; only properties are checked, never times."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, launcher_env


@pytest.mark.slow
def test_nerf_benchmark_quick(tmp_path):
    out = tmp_path / "nerf.json"
    cmd = [sys.executable, "benchmarks/nerf.py", "--quick", "--repeats", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=launcher_env(1), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    res = json.loads(out.read_text())
    for key in ("matmul_gflops", "mlp_fwd_gflops", "mlp_fwd_ratio", "mlp_fwd_bwd_ratio",
                "mlp_fwd_flops_per_point", "mlp_fwd_xla_flops_per_point", "render_fused_rays_per_s",
                "render_staged_rays_per_s", "render_ratio", "train_rays_per_s", "sampling"):
        assert key in res, key
    # The seed's MLP: 595,844 parameters, 2 * 593,408 Dense FLOPs per point forward.
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
