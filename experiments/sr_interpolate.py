"""Network interpolation (ESRGAN, arXiv 1809.00219, Sec. 3.4, Eq. 4) between the two stages.

    python -m experiments.sr_interpolate --config=experiments/configs/esrgan.py:cpu_gan \\
        --psnr_workdir=workdirs/esrgan_psnr --gan_workdir=workdirs/esrgan_gan \\
        --alphas=0,0.2,0.4,0.6,0.8,1 --workdir=workdirs/esrgan_interp

theta_interp = (1 - alpha) theta_PSNR + alpha theta_GAN: the generator of the newest checkpoint
of a psnr-stage run and that of a gan-stage run (each restored with its own config.json; both
must have `config.model`), blended parameter by parameter
(`jaxzoo.sr.losses.interpolate_params`), then scored on the test images of `--config`
exactly as the launchers' eval.json is (PSNR / SSIM on the Y channel, `scale` pixels shaved), so
alpha = 0 reproduces the psnr run's eval.json and alpha = 1 the gan run's. `--config` is the
config file of either paper (experiments/configs/esrgan.py or srgan.py); its data and eval keys
pick the test images. Writes to --workdir:
  interpolation.json  `alphas`, and per alpha in `results`: `alpha`, `test_psnr`, `test_ssim`
                      and their `*_per_image` lists; `bicubic_psnr`, `bicubic_ssim`,
                      `test_images`, the two workdirs and their checkpoint steps.
  interp_<k>_<name>.png  for the first `eval.num_pictures` test images, a strip of centre crops
                      (side min(128, H, W)): bicubic | one crop per alpha, in order | ground truth.
  psnr_vs_alpha.png   test PSNR (and SSIM) against alpha, bicubic's PSNR dashed.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxzoo import viz
from jaxzoo.errors import ConfigError
from jaxzoo.sr import training as sr_training
from jaxzoo.sr.losses import interpolate_params
from jaxzoo.train import cli, metrics as metrics_lib

DEFAULT_ALPHAS = "0,0.2,0.4,0.6,0.8,1"
FLAGS = ("psnr_workdir", "gan_workdir", "alphas")
CROP = 128


def check_alphas(alphas) -> tuple[float, ...]:
    """The alphas as floats; a ConfigError names any outside [0, 1]."""
    bad = [a for a in alphas if not 0.0 <= float(a) <= 1.0]
    if bad:
        raise ConfigError(f"--alphas: {bad} outside [0, 1] (0: the psnr generator, 1: the gan generator)")
    return tuple(float(a) for a in alphas)


def parse_alphas(text: str) -> tuple[float, ...]:
    """`"0,0.5,1"` -> (0.0, 0.5, 1.0), checked by `check_alphas`."""
    try:
        alphas = [float(item) for item in text.split(",")]
    except ValueError:
        raise ConfigError(f"--alphas={text!r}: expected numbers in [0, 1] separated by commas, e.g. "
                          f"--alphas={DEFAULT_ALPHAS}") from None
    return check_alphas(alphas)


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central [size', size', C] square of an [H, W, C] image, size' = min(size, H, W)."""
    h, w = img.shape[:2]
    s = min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top:top + s, left:left + s]


def plot_psnr(result: dict, path) -> pathlib.Path:
    """PSNR (left axis) and SSIM (right axis) against alpha, bicubic's PSNR dashed, as a PNG.
    Uses matplotlib's object API (no pyplot), so it never changes the caller's backend."""
    from matplotlib.figure import Figure

    alphas = [r["alpha"] for r in result["results"]]
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(alphas, [r["test_psnr"] for r in result["results"]], "o-", color="C0", label="PSNR")
    ax.axhline(result["bicubic_psnr"], color="C0", ls="--", lw=1, label="bicubic PSNR")
    ax.set_xlabel("alpha  (0: psnr stage, 1: gan stage)")
    ax.set_ylabel("test PSNR (dB, Y)")
    twin = ax.twinx()
    twin.plot(alphas, [r["test_ssim"] for r in result["results"]], "s:", color="C1", label="SSIM")
    twin.set_ylabel("test SSIM (Y)")
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(lines, [l.get_label() for l in lines], loc="best", fontsize=8)
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def interpolate(config, psnr_workdir, gan_workdir, alphas, workdir) -> dict:
    """Evaluates the generator interpolated at each alpha and writes the files listed in the
    module docstring to `workdir`; returns what interpolation.json holds."""
    if "stage" not in config or "arch" not in config.model:
        raise ConfigError("--config must be a super-resolution config (experiments/configs/esrgan.py "
                          "or srgan.py)")
    alphas = check_alphas(alphas)
    restored = {}
    for stage, run in (("psnr", psnr_workdir), ("gan", gan_workdir)):
        restored[stage] = sr_training.restore_trained_generator(run, stage=stage, config=config,
                                                                what=f"{stage}_workdir")
    (psnr_step, theta_psnr), (gan_step, theta_gan) = restored["psnr"], restored["gan"]
    test_pairs = sr_training.load_test_pairs(config)
    generate = sr_training.make_generator(config).apply
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    crops: dict[int, list] = {}  # image k -> [bicubic, alpha_1, ..., alpha_n, truth] crops
    names: dict[int, str] = {}
    results, evals = [], []
    for i, alpha in enumerate(alphas):
        def keep(k, name, bicubic, pred, hr, first=(i == 0)):
            if k < config.eval.num_pictures:
                if first:
                    crops[k], names[k] = [centre_crop(bicubic, CROP), centre_crop(hr, CROP)], name
                crops[k].insert(-1, centre_crop(pred, CROP))

        ev = sr_training.evaluate(config, generate, interpolate_params(theta_psnr, theta_gan, alpha),
                                  test_pairs, on_image=keep)
        evals.append(ev)
        results.append({"alpha": alpha, **{k: ev[k] for k in ("test_psnr", "test_ssim", "test_psnr_per_image",
                                                              "test_ssim_per_image")}})
        print(f"[jaxzoo] alpha {alpha:.2f}: test_psnr={ev['test_psnr']:.2f} dB test_ssim={ev['test_ssim']:.4f}",
              flush=True)
    first = evals[0]
    result = {"alphas": list(alphas), "results": results,
              **{k: first[k] for k in ("bicubic_psnr", "bicubic_ssim", "bicubic_psnr_per_image",
                                       "bicubic_ssim_per_image", "test_images", "num_test_images")},
              "psnr_workdir": str(psnr_workdir), "psnr_step": psnr_step,
              "gan_workdir": str(gan_workdir), "gan_step": gan_step}
    metrics_lib.write_json(workdir / "interpolation.json", result)
    for k, strip in crops.items():
        viz.save_png(workdir / f"interp_{k}_{names[k]}.png", np.concatenate(strip, 1))
    plot_psnr(result, workdir / "psnr_vs_alpha.png")
    return result


def main(args):
    missing = [f"--{f}" for f in ("psnr_workdir", "gan_workdir") if not args.flags.get(f)]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required: the workdirs of the two stages' runs")
    alphas = parse_alphas(args.flags.get("alphas", DEFAULT_ALPHAS))
    interpolate(args.config, args.flags["psnr_workdir"], args.flags["gan_workdir"], alphas, args.workdir)


if __name__ == "__main__":
    cli.run(main, flags=FLAGS)
