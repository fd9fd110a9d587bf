"""What the GPT launchers (experiments/gpt.py, experiments/rope_extrapolation.py) share: data,
the model config from a launcher config, optimiser, loss, training one model, evaluation and
samples."""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxzoo.data import pipeline, pycorpus
from jaxzoo.lm import gpt
from jaxzoo.lm.gpt import GPT, GPTConfig
from jaxzoo.train import loop
from jaxzoo.train.config import ConfigError
from jaxzoo.train.progress import progress

MODEL_KEYS = ("num_layers", "num_heads", "d_model", "max_len", "position", "rope_base",
              "num_kv_heads", "dropout", "attention_impl")


def load_data(config):
    """(train token stream, test token stream, byte_level) as uint16 [T] arrays.

    pystdlib: the byte-level standard-library corpus; tokens: uint16 files on disk, memory-mapped
    (nanoGPT's train.bin / val.bin layout).
    """
    d = config.data
    if d.name == "pystdlib":
        train = pycorpus.load_tokens("train", d.data_dir or None, d.max_train_bytes or None)
        return train, pycorpus.load_tokens("test", d.data_dir or None), True
    if d.name == "tokens":
        for field in ("train_path", "test_path"):
            path = pathlib.Path(d[field])
            if not d[field] or not path.is_file():
                raise ConfigError(f"data.name='tokens' needs --config.data.{field}=<uint16 token "
                                  f"file>; got {d[field]!r}, which is not a file")
        load = lambda p: np.memmap(p, dtype=np.uint16, mode="r")
        return load(d.train_path), load(d.test_path), False
    raise ConfigError(f"data.name={d.name!r}; allowed: 'pystdlib', 'tokens'")


def model_config(config, **changes) -> GPTConfig:
    vocab = pycorpus.VOCAB_SIZE if config.data.name == "pystdlib" else config.data.vocab_size
    kw = {k: config.model[k] for k in MODEL_KEYS}
    return GPTConfig(vocab_size=vocab, **{**kw, **changes})


def make_optimizer(config):
    o = config.optim
    if not 0 <= o.warmup_steps < config.total_steps:
        raise ConfigError(f"optim.warmup_steps={o.warmup_steps} must be in [0, total_steps="
                          f"{config.total_steps}); lower it with --config.optim.warmup_steps")
    lr = optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps, config.total_steps,
                                            end_value=0.1 * o.lr)
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # not biases/LN
    return optax.chain(
        optax.clip_by_global_norm(o.clip_norm),
        optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask))


def make_loss_fn(model: GPT):
    def loss_fn(params, batch, key):
        tokens = batch["tokens"].astype(jnp.int32)
        logits = model.apply(params, tokens[:, :-1], deterministic=False, rngs={"dropout": key})
        loss, accuracy = gpt.lm_loss(logits, tokens[:, 1:])
        return loss, {"accuracy": accuracy}

    return loss_fn


def evaluate(model_config: GPTConfig, params, stream: np.ndarray, seq_len: int, batch_size: int,
             max_tokens: int = 0, byte_level: bool = True, desc: str = "eval") -> dict:
    """Next-token loss over non-overlapping windows of `seq_len` + 1 tokens of `stream`.

    Every target token of every window is scored once (the first token of each window only as
    context). Returns test_loss (nats/token), test_accuracy, num_test_tokens, and for byte-level
    data test_bits_per_byte: total nats / ln 2 over the byte targets (EOT targets cost bits but
    are not bytes of text).
    """
    stream = np.asarray(stream[:max_tokens + 1] if max_tokens else stream)
    windows = pycorpus.windows(stream, seq_len)
    model = GPT(model_config)

    @jax.jit
    def score(params, w, valid):
        w = w.astype(jnp.int32)
        logits = model.apply(params, w[:, :-1])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, w[:, 1:])
        correct = jnp.argmax(logits, -1) == w[:, 1:]
        weight = valid[:, None].astype(jnp.float32)
        return (jnp.sum(nll * weight), jnp.sum(correct * weight),
                jnp.sum((w[:, 1:] < pycorpus.EOT) * weight))

    sums = np.zeros(3)
    starts = range(0, len(windows), batch_size)
    with progress(len(starts), desc=desc, unit="batch") as bar:
        for s in starts:
            w = np.asarray(windows[s:s + batch_size])
            valid = np.arange(batch_size) < len(w)  # pad the last batch: one compiled shape
            w = np.concatenate([w, np.zeros((batch_size - len(w), w.shape[1]), w.dtype)])
            sums += np.asarray([float(x) for x in score(params, w, valid)])
            bar.update(1)
    total, correct, n_bytes = sums
    n = len(windows) * seq_len
    out = {"test_loss": float(total / n), "test_accuracy": float(correct / n),
           "num_test_tokens": int(n)}
    if byte_level:
        out["test_bits_per_byte"] = float(total / math.log(2) / max(n_bytes, 1.0))
    return out


def write_samples(model_config: GPTConfig, params, config, path) -> str:
    """Nucleus-sampled continuations of the prompt, stopped at the end-of-text token."""
    e = config.eval
    tok = pycorpus.ByteTokenizer()
    prompt = tok.encode(e.sample_prompt or "\n")[None].repeat(4, 0)
    n = e.sample_tokens
    if model_config.position == "learned":
        n = min(n, model_config.max_len - prompt.shape[1])
    out = gpt.generate(model_config, params, prompt, jax.random.key(config.seed), n,
                       temperature=e.temperature,
                       top_p=e.top_p, stop_sequences=[[pycorpus.EOT]], pad_id=pycorpus.EOT)
    texts = [e.sample_prompt + tok.decode(np.asarray(row)[:n]) for row, n in zip(out.tokens, out.lengths)]
    text = "\n\n# ----- sample -----\n".join(texts)
    pathlib.Path(path).write_text(text + "\n")
    return text


def train(config, train_stream: np.ndarray, workdir, hooks=()) -> loop.TrainResult:
    """Trains (or resumes) the configured model on windows of `seq_len` + 1 tokens."""
    mconfig = model_config(config)
    if mconfig.position == "learned" and config.seq_len > mconfig.max_len:
        raise ConfigError(f"seq_len={config.seq_len} exceeds model.max_len={mconfig.max_len}")
    model = GPT(mconfig)
    loader = pipeline.StepIndexedLoader({"tokens": pycorpus.windows(train_stream, config.seq_len)},
                                        config.batch_size, seed=config.seed)
    task = loop.Task(
        init_params=lambda key: model.init(key, jnp.zeros((1, config.seq_len), jnp.int32)),
        loss_fn=make_loss_fn(model),
        tx=make_optimizer(config),
        loader=loader,
    )
    return loop.train(config, workdir, task, hooks=hooks)
