"""How positional encodings and RoPE context-extension methods extrapolate beyond training length.

    nice -n 5 python -m experiments.rope_extrapolation \
        --config=experiments/configs/rope_extrapolation.py:cpu --workdir=workdirs/rope_extrapolation

Trains one GPT (experiments/gpt.py's model, optimiser and loss) at length L = `seq_len` per
encoding in `encodings`, each in `workdir/<encoding>/` through the shared runtime, then scores
next-token loss and accuracy on the held-out stream in non-overlapping windows of n = k x L
tokens for k in `eval.length_multiples`, every cell over the same `eval.max_tokens` targets.

Method rows (s = `eval.scale_factor`, w = `eval.rerope_window` or L // 2); the RoPE rows all run
the one RoPE-trained model, changing only inference-time GPTConfig fields:
  rope          no scaling.
  pi            positional interpolation (Chen et al. 2023, 2306.15595, Eq. 4): theta_i / s.
  ntk           NTK-aware scaling (bloc97 2023): base b * s^(d/(d-2)).
  dynamic_ntk   Hugging Face "dynamic", factor 1, original length L: the NTK base for s = n / L,
                chosen from each sequence's own length n. A full forward pass over n tokens sees
                n at every position, so this row is exactly NTK at s = n / L (= ntk_matched, the
                best static NTK factor for that length); it differs from ntk_matched only under
                incremental decoding, which this study does not use.
  yarn          YaRN (Peng et al. 2023, 2309.00071, Eqs. 17-22), factor s, original length L,
                beta_fast 32, beta_slow 1, attention factor 0.1 ln s + 1.
  ntk_logn      ntk plus logn query scaling max(1, log(m + 1) / log L) (Su 2021).
  rerope        ReRoPE (Su 2023): relative position min(i - j, w), two-pass reference attention.
  pi_matched, ntk_matched, yarn_matched   the same with s = n / L at each length (factor 1, the
                identity, at 1x).
  sinusoidal, t5, learned   the other trained models, unchanged. "learned" has a table of
                max(length_multiples) x L rows; rows >= L get no gradient in training (only
                weight decay shrinks their N(0, 0.01^2) initialisation), so beyond 1x it reads
                untrained positions.
The static rows (pi, ntk, yarn, ntk_logn) use one factor s at every length, as a deployed model
would, so at 1x they pay for the scaling. With s = max(length_multiples) they coincide with the
matched rows at the longest length; cells whose model config repeats one already scored at that
length are computed once.

Writes to the workdir: eval.json ({method: {"<k>x": {"loss", "accuracy", "length", "tokens"}}},
updated after every cell), results.md (accuracy and loss tables, and our ranking of Su's five
rows at the longest length against his), extrapolation.png (accuracy against length), study.json
(the config keys that define the cells; a later run with other values there is refused, so one
eval.json never mixes two studies). Running the same command again resumes: training restarts
from each model's checkpoint (a finished model is not retrained), and a model whose cells are all
in eval.json is neither restored nor rescored.
"""

from __future__ import annotations

import itertools
import json
import pathlib

import jax
import ml_collections

from jaxzoo.errors import ConfigError
from jaxzoo.lm import training as lm_training
from jaxzoo.train import cli, config as config_lib, mesh as mesh_lib

ENCODINGS = ("rope", "sinusoidal", "t5", "learned")
# Row -> the trained encoding it evaluates, in table order.
METHODS = {"rope": "rope", "pi": "rope", "ntk": "rope", "dynamic_ntk": "rope", "yarn": "rope",
           "ntk_logn": "rope", "rerope": "rope", "pi_matched": "rope", "ntk_matched": "rope",
           "yarn_matched": "rope", "sinusoidal": "sinusoidal", "t5": "t5", "learned": "learned"}
# Su's table (100M model trained at 512, token accuracy at 4096), worst to best.
SU_RANKING = ("pi", "rope", "ntk", "ntk_logn", "rerope")
SU_NAMES = {"pi": "PI", "rope": "no scaling", "ntk": "NTK", "ntk_logn": "NTK-logn",
            "rerope": "ReRoPE"}


def method_changes(method: str, train_len: int, length: int, scale_factor: float,
                   rerope_window: int) -> dict:
    """GPTConfig fields turning the trained model of METHODS[method] into `method` at `length`."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {tuple(METHODS)}")
    s = length / train_len if method.endswith("_matched") else float(scale_factor)
    base = method.removesuffix("_matched")
    if base == "pi":
        return {"rope_scaling": {"rope_type": "linear", "factor": s}}
    if base in ("ntk", "ntk_logn"):
        extra = {"logn_train_len": train_len} if base == "ntk_logn" else {}
        return {"rope_scaling": {"rope_type": "ntk", "factor": s}, **extra}
    if base == "dynamic_ntk":
        return {"rope_scaling": {"rope_type": "dynamic", "factor": 1.0,
                                 "original_max_position_embeddings": train_len}}
    if base == "yarn":
        return {"rope_scaling": {"rope_type": "yarn", "factor": s, "beta_fast": 32.0,
                                 "beta_slow": 1.0, "original_max_position_embeddings": train_len}}
    if base == "rerope":
        return {"rerope_window": rerope_window}
    return {}  # rope, sinusoidal, t5, learned


def check_config(config) -> None:
    """Raises ConfigError naming the bad value of a study config."""
    e, big_l = config.eval, config.seq_len
    bad = [x for x in config.encodings if x not in ENCODINGS]
    if bad or not config.encodings or len(set(config.encodings)) != len(config.encodings):
        raise ConfigError(f"encodings={tuple(config.encodings)}: a non-empty set of {ENCODINGS}")
    mults = tuple(e.length_multiples)
    if not mults or any(not isinstance(k, int) or k < 1 for k in mults) or list(mults) != sorted(set(mults)):
        raise ConfigError(f"eval.length_multiples={mults}: increasing positive ints, e.g. (1, 4, 8, 16)")
    longest = max(mults) * big_l
    if e.max_tokens < longest or e.max_tokens % longest:
        raise ConfigError(f"eval.max_tokens={e.max_tokens} must be a positive multiple of the longest "
                          f"evaluation length {longest} (so every length scores the same tokens)")
    if not e.scale_factor > 0:
        raise ConfigError(f"eval.scale_factor={e.scale_factor} must be > 0")
    if e.rerope_window < 0 or e.batch_tokens < 1:
        raise ConfigError(f"eval.rerope_window={e.rerope_window} must be >= 0 and "
                          f"eval.batch_tokens={e.batch_tokens} >= 1")


def encoding_config(config, encoding: str) -> ml_collections.ConfigDict:
    """The experiments/gpt.py-style config of the model trained with `encoding` (without the
    study-level `encodings`, so adding an encoding to a study resumes the models it has)."""
    c = ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k != "encodings"})
    c.model.position = encoding
    c.model.max_len = config.seq_len * (max(config.eval.length_multiples) if encoding == "learned" else 1)
    c.lock()
    return c


# Keys that do not change any cell's value (model.position and model.max_len are set per
# encoding); every other key must match the study that wrote eval.json, or resuming would mix
# cells of two studies.
_FREE_KEYS = ("encodings", "log_every", "checkpoint_every", "keep_checkpoints", "eval.batch_tokens",
              "model.position", "model.max_len")


def check_same_study(config, workdir: pathlib.Path) -> None:
    """Records the cell-defining config in workdir/study.json, or checks it against the record."""
    leaves = {key: config_lib.get_key(config, key) for key in config_lib.flat_keys(config)
              if key not in _FREE_KEYS}
    current = json.loads(json.dumps(leaves))  # tuples as lists, as read back
    path = workdir / "study.json"
    if not path.exists():
        _write_json(path, current)
        return
    recorded = json.loads(path.read_text())
    diff = sorted(k for k in current.keys() | recorded.keys() if current.get(k) != recorded.get(k))
    if diff:
        raise ConfigError(f"{workdir} holds a study with different {', '.join(diff)} (see "
                          f"{path}); use a new --workdir or the same values")


def _write_json(path, obj) -> None:
    if jax.process_index() != 0:
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def run_study(config, workdir):
    """Trains, scores every cell (skipping those in eval.json), writes the reports. Returns
    eval.json's dict, or None when a training run was preempted."""
    check_config(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    big_l, e = config.seq_len, config.eval
    train, test, byte_level = lm_training.load_data(config)
    if len(test) < e.max_tokens + 1:
        raise ConfigError(f"eval.max_tokens={e.max_tokens} exceeds the test stream ({len(test)} tokens)")
    check_same_study(config, workdir)
    window = e.rerope_window or big_l // 2
    eval_path = workdir / "eval.json"
    results = json.loads(eval_path.read_text()) if eval_path.exists() else {}
    methods = [m for m, enc in METHODS.items() if enc in config.encodings]
    for encoding in config.encodings:
        rows = [m for m in methods if METHODS[m] == encoding]
        todo = [(m, k) for m in rows for k in e.length_multiples if f"{k}x" not in results.get(m, {})]
        if not todo:
            print(f"[jaxzoo] {encoding}: all {len(rows) * len(e.length_multiples)} cells in "
                  "eval.json; not retraining or rescoring", flush=True)
            continue
        enc_config = encoding_config(config, encoding)
        result = lm_training.train(enc_config, train, workdir / encoding)
        if result.preempted:
            return None
        params = jax.device_put(mesh_lib.to_host(result.state.params))
        trained = lm_training.model_config(enc_config)
        scored = {}  # (GPTConfig, length) -> cell: configs that coincide are scored once
        for method, k in todo:
            n = k * big_l
            mconfig = trained.replace(attention_impl=e.attention_impl,
                                      **method_changes(method, big_l, n, e.scale_factor, window))
            if (mconfig, n) not in scored:
                m = lm_training.evaluate(mconfig, params, test, n, max(1, e.batch_tokens // n),
                                          e.max_tokens, byte_level, desc=f"{method} {k}x")
                scored[mconfig, n] = {"loss": m["test_loss"], "accuracy": m["test_accuracy"],
                                      "length": n, "tokens": m["num_test_tokens"]}
            results.setdefault(method, {})[f"{k}x"] = scored[mconfig, n]
            print(f"[jaxzoo] {method} at {k}x = {n}: accuracy {scored[mconfig, n]['accuracy']:.4f}, "
                  f"loss {scored[mconfig, n]['loss']:.4f}", flush=True)
            _write_json(eval_path, results)
    results = {m: results[m] for m in methods}  # table order
    _write_json(eval_path, results)
    if jax.process_index() == 0:
        (workdir / "results.md").write_text(results_markdown(results, config))
        plot_accuracy(results, workdir / "extrapolation.png")
    return results


# ------------------------------------------------------------------------------------ reports


def su_comparison(results: dict, key: str) -> str:
    """Our order of Su's five rows by accuracy at column `key`, and where it differs from his."""
    rows = [m for m in SU_RANKING if m in results]
    if len(rows) < 2:
        return "Too few of Su's rows (pi, rope, ntk, ntk_logn, rerope) were evaluated to compare."
    acc = {m: results[m][key]["accuracy"] for m in rows}
    ours = sorted(rows, key=lambda m: acc[m])
    order = SU_NAMES[ours[0]] + f" ({100 * acc[ours[0]]:.2f}%)"
    for a, b in zip(ours, ours[1:]):
        order += (" = " if acc[a] == acc[b] else " < ") + f"{SU_NAMES[b]} ({100 * acc[b]:.2f}%)"
    pairs = list(itertools.combinations(rows, 2))  # (worse, better) in Su's order
    agree = sum(acc[a] < acc[b] for a, b in pairs)
    differ = [(a, b) for a, b in pairs if acc[a] >= acc[b]]
    text = f"At {key} ({results[rows[0]][key]['length']} tokens) our accuracies rank {order}. "
    if not differ:
        return text + "This is Su's ranking exactly."
    tau = (agree - sum(acc[a] > acc[b] for a, b in pairs)) / len(pairs)
    return text + (f"It agrees with Su on {agree} of {len(pairs)} pairwise orders (Kendall tau "
                   f"{tau:.2f}) and differs on: "
                   + "; ".join(f"{SU_NAMES[a]} {'ties' if acc[a] == acc[b] else 'beats'} "
                               f"{SU_NAMES[b]} ({100 * acc[a]:.2f}% vs {100 * acc[b]:.2f}%; Su: "
                               f"{SU_NAMES[a]} lower)" for a, b in differ) + ".")


def results_markdown(results: dict, config) -> str:
    big_l, e, mults = config.seq_len, config.eval, config.eval.length_multiples
    keys = [f"{k}x" for k in mults]
    head = "| method | " + " | ".join(f"{k}x (n = {k * big_l})" for k in mults) + " |"
    rule = "|---|" + "---:|" * len(keys)

    def table(field, fmt, best):
        cols = {k: [results[m][k][field] for m in results] for k in keys}
        lines = [head, rule]
        for m in results:
            cells = []
            for k in keys:
                v = results[m][k][field]
                text = fmt(v)
                cells.append(f"**{text}**" if v == best(cols[k]) else text)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    m = config.model
    longest = keys[-1]
    out = [
        f"# Length extrapolation, trained at L = {big_l}",
        "",
        f"Each encoding trained for {config.total_steps} steps of {config.batch_size} x {big_l} "
        f"tokens ({m.num_layers} layers, d_model {m.d_model}, {m.num_heads} heads, data "
        f"{config.data.name}); every cell scores the same {e.max_tokens} held-out target tokens "
        f"in non-overlapping windows of n tokens. Static scalings use s = {e.scale_factor:g}; "
        f"*_matched rows use s = n / L; ReRoPE window w = {e.rerope_window or big_l // 2}. "
        "`learned` reads untrained table rows beyond L. Best per column in bold.",
        "",
        "## Next-token accuracy (%)",
        "",
        table("accuracy", lambda v: f"{100 * v:.2f}", max),
        "",
        "## Next-token loss (nats/token)",
        "",
        table("loss", lambda v: f"{v:.4f}", min),
        "",
        "## Comparison with Su's ranking",
        "",
        "Su's published table (100M model trained at 512, token accuracy at 4096 = 8 x L) ranks "
        "PI < no scaling < NTK < NTK-logn < ReRoPE. " + su_comparison(results, longest),
    ]
    if "8x" in keys and longest != "8x":
        out += ["", "At Su's own ratio: " + su_comparison(results, "8x")]
    if e.scale_factor != max(mults):
        out += ["", f"(Static rows use s = {e.scale_factor:g}, not the longest ratio "
                    f"{max(mults)}; Su's rows correspond to s = n / L, our *_matched rows.)"]
    return "\n".join(out) + "\n"


def plot_accuracy(results: dict, path) -> pathlib.Path:
    """Accuracy against evaluation length (log-x), one line per method (matplotlib object API,
    so the caller's backend is untouched)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    colors = colormaps["tab20"].colors  # 13 rows: distinct colours, styles by family
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (method, cells) in enumerate(results.items()):
        lengths = [c["length"] for c in cells.values()]
        style = "--" if method.endswith("_matched") else (":" if METHODS[method] != "rope" else "-")
        ax.plot(lengths, [100 * c["accuracy"] for c in cells.values()], style, marker="o", ms=3,
                color=colors[i % len(colors)], label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_xlabel("evaluation length n (tokens)")
    ax.set_ylabel("next-token accuracy (%)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    path = pathlib.Path(path)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    cli.run(lambda args: run_study(args.config, args.workdir))
