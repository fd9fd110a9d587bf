"""GPT launcher smoke tests: the byte-level stdlib corpus and token files on disk."""

import json
import math

import numpy as np
import pytest

TINY = ["--config.model.num_layers=1", "--config.model.d_model=16", "--config.model.num_heads=2",
        "--config.seq_len=16", "--config.batch_size=4", "--config.total_steps=3",
        "--config.log_every=1", "--config.checkpoint_every=3", "--config.optim.warmup_steps=1",
        "--config.eval.batch_size=8", "--config.eval.sample_tokens=8"]


@pytest.mark.slow
def test_gpt_cpu_launcher_smoke(run_launcher, tmp_path):
    work = tmp_path / "gpt"
    run_launcher("experiments.gpt", "experiments/configs/gpt.py:cpu", work, *TINY,
                 "--config.data.max_train_bytes=20000", "--config.eval.max_tokens=1000",
                 f"--config.data.data_dir={tmp_path / 'tfds'}", num_devices=2)
    ev = json.loads((work / "eval.json").read_text())
    assert ev["step"] == 3
    assert ev["num_test_tokens"] == 1000 // 16 * 16  # whole windows of the capped stream
    # an almost untrained byte model: loss near log(257), accuracy in [0, 1]
    assert 3.0 < ev["test_loss"] < 6.5 and 0.0 <= ev["test_accuracy"] <= 1.0
    # bits per byte >= nats per token / ln 2 (EOT targets add cost but are not bytes)
    assert ev["test_bits_per_byte"] >= ev["test_loss"] / math.log(2) - 1e-9
    samples = (work / "samples.txt").read_text()
    assert samples.startswith("def ")
    assert (work / "checkpoints").is_dir()


@pytest.mark.slow
def test_gpt_launcher_on_token_files(run_launcher, tmp_path):
    rng = np.random.default_rng(0)
    # a learnable stream: token t+1 = (t + 1) mod 50 with 10% noise
    seq = np.cumsum(np.where(rng.random(6000) < 0.9, 1, rng.integers(0, 50, 6000))) % 50
    seq.astype(np.uint16).tofile(tmp_path / "train.bin")
    seq[:600].astype(np.uint16).tofile(tmp_path / "val.bin")
    work = tmp_path / "gpt_tokens"
    run_launcher("experiments.gpt", "experiments/configs/gpt.py:cpu", work, *TINY,
                 "--config.data.name=tokens", "--config.data.vocab_size=50",
                 f"--config.data.train_path={tmp_path / 'train.bin'}",
                 f"--config.data.test_path={tmp_path / 'val.bin'}",
                 "--config.model.position=learned", "--config.model.max_len=16")
    ev = json.loads((work / "eval.json").read_text())
    assert "test_bits_per_byte" not in ev and not (work / "samples.txt").exists()
    assert ev["num_test_tokens"] == 599 // 16 * 16 and math.isfinite(ev["test_loss"])
    # a missing token file is named in the error
    proc = run_launcher("experiments.gpt", "experiments/configs/gpt.py:cpu", tmp_path / "bad",
                        *TINY, "--config.data.name=tokens", "--config.data.train_path=/nope.bin",
                        check=False)
    assert proc.returncode != 0 and "/nope.bin" in proc.stderr


def test_warmup_longer_than_training_is_a_config_error():
    from jaxzoo.lm import training as _gpt
    from jaxzoo.train.config import ConfigError, load_config

    config = load_config("experiments/configs/gpt.py:cpu")
    config.total_steps = 50
    with pytest.raises(ConfigError, match="optim.warmup_steps=100"):
        _gpt.make_optimizer(config)
