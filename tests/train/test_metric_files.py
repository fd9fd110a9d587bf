"""jaxzoo.train.metrics: eval.json writing and the JSONL metrics round trip."""

import json

import numpy as np

from jaxzoo.train import metrics as metrics_lib


def test_write_eval_adds_step_writes_json_and_prints_scalars(tmp_path, capsys):
    metrics = {"test_loss": np.float32(1.23456), "per_image": [1.0, 2.0], "name": "x", "n": 3}
    out = metrics_lib.write_eval(tmp_path, metrics, step=7)
    assert out is metrics and metrics["step"] == 7
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["step"] == 7 and written["per_image"] == [1.0, 2.0] and written["name"] == "x"
    assert abs(written["test_loss"] - 1.23456) < 1e-6  # numpy scalars become plain JSON numbers
    assert not (tmp_path / "eval.json.tmp").exists()
    line = capsys.readouterr().out
    assert line.startswith("[jaxzoo] eval:") and "'step': 7" in line and "'n': 3" in line
    assert "per_image" not in line and "'name'" not in line


def test_metric_writer_round_trip(tmp_path):
    writer = metrics_lib.MetricWriter(tmp_path, resume_step=0)
    writer.write(1, {"loss": 2.5})
    writer.write(2, {"loss": 1.5, "grad_norm": 0.1})
    writer.close()
    rows = metrics_lib.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["grad_norm"] == 0.1
