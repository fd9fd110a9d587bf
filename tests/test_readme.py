"""The README's two set-up commands are the ones CI and users run."""

import ast
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def _setup_commands():
    text = (REPO / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_exactly_two_setup_commands_and_ci_runs_the_second():
    commands = _setup_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    ci_lines = [l for l in (REPO / ".ci" / "run").read_text().splitlines()
                if l.strip() and not l.startswith("#") and not l.startswith(("set ", "cd "))]
    assert ci_lines == [commands[1]]


def test_main_job_command_names_an_existing_launcher_and_config():
    main_job = _setup_commands()[0]
    module = re.search(r"-m (experiments\.\w+)", main_job).group(1)
    config = re.search(r"--config=([\w/.]+\.py):(\w+)", main_job)
    assert (REPO / (module.replace(".", "/") + ".py")).is_file()
    assert (REPO / config.group(1)).is_file()


# Measured figures: a time, a decimal (maybe a range or a percentage), or a comma-grouped count.
FIGURE = re.compile(r"\d+ min \d+ s|\d+\.\d+(?:-\d+\.\d+)?%?|\d{1,3}(?:,\d{3})+")


def _docstring(path: pathlib.Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def _homes(text: str) -> list[pathlib.Path]:
    """The config and benchmark files a README row or bullet names (brace lists expanded)."""
    names = []
    for folder, group in re.findall(r"(experiments|benchmarks)/(\{[\w,]+\}|\w+)\.py", text):
        for name in group.strip("{}").split(","):
            names.append(f"experiments/configs/{name}.py" if folder == "experiments"
                         else f"benchmarks/{name}.py")
    return [REPO / n for n in names if (REPO / n).is_file()]


def _section(title: str) -> str:
    return (REPO / "README.md").read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_figure_pattern_finds_every_kind_of_figure():
    text = "in 6 min 1 s, 25.66 dB, 1.2-1.6% of XLA's, 124,439,808 parameters, 3000 steps"
    assert FIGURE.findall(text) == ["6 min 1 s", "25.66", "1.2-1.6%", "124,439,808"]


def test_every_figure_in_the_papers_table_is_in_its_config_header():
    rows = [l for l in _section("Papers").splitlines() if l.startswith("| ") and "---" not in l][1:]
    assert len(rows) >= 7
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        homes = _homes(cells[2])
        figures = FIGURE.findall(cells[4])
        assert homes or not figures, f"row {cells[0]!r} has figures but names no config: {row}"
        text = " ".join(" ".join(_docstring(h).split()) for h in homes)
        missing = [f for f in figures if f not in text]
        assert not missing, f"{cells[0][:40]!r}: {missing} are not in {[h.name for h in homes]}"


def test_main_job_figures_are_those_of_the_nerf_config():
    intro = _section("Set-up").split("```bash", 1)[0]
    figures = FIGURE.findall(intro)
    assert len(figures) >= 3
    header = " ".join(_docstring(REPO / "experiments/configs/nerf.py").split())
    assert [f for f in figures if f not in header] == []


def test_study_table_is_the_one_in_the_study_config():
    header = " ".join(_docstring(REPO / "experiments/configs/rope_extrapolation.py").split())
    rows = [l for l in _section("Length extrapolation study").splitlines() if l.startswith("| ")]
    assert len(rows) == 11  # the header and ten methods
    for row in rows[1:]:
        assert " ".join(row.split()) in header, row
    assert [f for f in FIGURE.findall(_section("Length extrapolation study"))
            if f not in header] == []


def test_benchmark_figures_are_in_the_benchmark_docstrings():
    bullets = _section("Benchmarks").split("\n* ")[1:]
    assert len(bullets) >= 5
    for bullet in bullets:
        homes = _homes(bullet)
        text = " ".join(" ".join(_docstring(h).split()) for h in homes)
        assert [f for f in FIGURE.findall(bullet) if f not in text] == [], bullet
