"""GPT language-model launcher.

    python -m experiments.gpt --config=experiments/configs/gpt.py:cpu --workdir=workdirs/gpt

Writes to the workdir: config.json, metrics.jsonl (+ tensorboard/), checkpoints/, eval.json
(`test_loss`: mean next-token cross-entropy in nats over the held-out stream, `test_accuracy`,
and for byte-level data `test_bits_per_byte` = total nats / ln 2 / number of byte targets) and,
for byte-level data, samples.txt (continuations of `eval.sample_prompt`, nucleus sampling).
"""

from __future__ import annotations

import pathlib

import jax

from jaxzoo.lm import training as lm_training
from jaxzoo.train import cli, mesh as mesh_lib, metrics as metrics_lib


def train_and_evaluate(config, workdir, hooks=()):
    """Trains, then evaluates and writes eval.json. Returns the eval dict (None if preempted)."""
    workdir = pathlib.Path(workdir)
    train, test, byte_level = lm_training.load_data(config)
    result = lm_training.train(config, train, workdir, hooks=hooks)
    if result.preempted:
        return None
    mconfig = lm_training.model_config(config)
    params = mesh_lib.to_host(result.state.params)
    metrics = lm_training.evaluate(mconfig, params, test, config.seq_len, config.eval.batch_size,
                            config.eval.max_tokens, byte_level)
    metrics_lib.write_eval(workdir, metrics, result.step)
    if byte_level and jax.process_index() == 0:
        lm_training.write_samples(mconfig, params, config, workdir / "samples.txt")
    return metrics


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
