"""Imports flow one way: core <- nn <- families <- experiments (checked by parsing, with `ast`).

* `jaxzoo.core` and every family's pure modules import no flax, optax, orbax, data or file I/O
  libraries, and only pure jaxzoo code;
* the shared layers (core, nn, io, data, train) never import a paper family;
* `jaxzoo` never imports `experiments`; no launcher imports another launcher, and `experiments/`
  holds no private shared modules (what two launchers share lives in the family package).
"""

import ast
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FAMILIES = ("nerf", "diffusion", "sr", "lm", "vae", "clip")
# The jaxzoo packages each shared layer may import (besides itself).
SHARED_LAYERS = {
    "core": {"errors"},
    "nn": {"errors", "core"},
    "io": {"errors"},
    "data": {"errors", "core"},
    "train": {"errors", "core", "data"},
}
# Family modules documented as pure jax.numpy: they may import only core and each other.
PURE_MODULES = ("nerf/render.py", "diffusion/gaussian.py", "diffusion/samplers.py", "sr/ops.py",
                "sr/losses.py", "vae/elbo.py", "clip/losses.py")
# What pure code must not import: frameworks with state or I/O, and file-format libraries.
IMPURE_LIBRARIES = {"flax", "optax", "orbax", "tensorflow_datasets", "tensorflow", "PIL",
                    "ml_collections", "tqdm", "tensorboardX", "os", "io", "pathlib", "json",
                    "pickle", "shutil", "tempfile", "zipfile", "subprocess", "socket"}


def imports(path: pathlib.Path, package: str = "") -> list[str]:
    """The absolute module names `path` imports, relative imports resolved against `package`
    (default: the package of `path` in the repository)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = package or ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.append(base)
            # `from jaxzoo import viz` imports the module jaxzoo.viz (a name, for other targets).
            names += [f"{base}.{alias.name}" for alias in node.names
                      if base.split(".")[0] in ("jaxzoo", "experiments")]
    return names


def jaxzoo_part(name: str):
    """`jaxzoo.core.rope` -> "core"; `jaxzoo.viz` -> "viz"; `jaxzoo` -> None."""
    parts = name.split(".")
    return parts[1] if parts[0] == "jaxzoo" and len(parts) > 1 else None


def py_files(folder):
    return sorted((REPO / folder).rglob("*.py"))


def test_the_parser_sees_every_form_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import flax.linen as nn\nfrom jaxzoo import viz\nfrom . import rope\n"
                     "from .attention import x\nfrom jaxzoo.train.loop import train\n")
    got = imports(probe, package="jaxzoo.core")
    assert {"flax.linen", "jaxzoo.viz", "jaxzoo.core.rope", "jaxzoo.core.attention",
            "jaxzoo.train.loop"} <= set(got)


@pytest.mark.parametrize("layer", sorted(SHARED_LAYERS))
def test_shared_layers_import_no_family_and_only_lower_layers(layer):
    allowed = SHARED_LAYERS[layer] | {layer}
    bad = {}
    for path in py_files(f"jaxzoo/{layer}"):
        wrong = [n for n in imports(path) if jaxzoo_part(n) and jaxzoo_part(n) not in allowed]
        wrong += [n for n in imports(path) if n.split(".")[0] == "experiments"]
        if wrong:
            bad[str(path.relative_to(REPO))] = wrong
    assert not bad, f"jaxzoo.{layer} may import only {sorted(allowed)}: {bad}"


@pytest.mark.parametrize("module", ["core"] + list(PURE_MODULES))
def test_pure_code_imports_no_framework_or_io(module):
    paths = py_files("jaxzoo/core") if module == "core" else [REPO / "jaxzoo" / module]
    bad = {}
    for path in paths:
        names = imports(path)
        wrong = [n for n in names if n.split(".")[0] in IMPURE_LIBRARIES]
        pure_targets = {"core"} | {m.removesuffix(".py").replace("/", ".") for m in PURE_MODULES}
        wrong += [n for n in names if jaxzoo_part(n) and jaxzoo_part(n) != "core"
                  and ".".join(n.split(".")[1:3]) not in pure_targets and n != "jaxzoo.errors"]
        if wrong:
            bad[str(path.relative_to(REPO))] = wrong
    assert not bad, f"pure modules import impure code: {bad}"


def test_every_family_package_exists_and_jaxzoo_never_imports_experiments():
    for family in FAMILIES:
        assert (REPO / "jaxzoo" / family / "__init__.py").is_file(), family
    bad = {str(p.relative_to(REPO)): [n for n in imports(p) if n.split(".")[0] == "experiments"]
           for p in py_files("jaxzoo")}
    assert not {k: v for k, v in bad.items() if v}


def test_no_launcher_imports_another_and_no_private_shared_modules():
    launchers = sorted((REPO / "experiments").glob("*.py"))
    private = [p.name for p in launchers if p.name.startswith("_") and p.name != "__init__.py"]
    private += [p.name for p in (REPO / "experiments" / "configs").glob("_*.py")
                if p.name != "__init__.py"]
    assert not private, f"shared launcher code belongs in its family package: {private}"
    bad = {}
    for path in launchers + sorted((REPO / "experiments" / "configs").glob("*.py")):
        wrong = [n for n in imports(path) if n.split(".")[0] == "experiments"]
        if wrong:
            bad[path.name] = wrong
    assert not bad, f"launchers and configs import launcher code: {bad}"


def test_pure_modules_say_so():
    for module in PURE_MODULES:
        doc = ast.get_docstring(ast.parse((REPO / "jaxzoo" / module).read_text())) or ""
        assert "pure" in doc.lower(), f"jaxzoo/{module}: its docstring should say it is pure"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
