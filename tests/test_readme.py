"""The README's two set-up commands are the ones CI and users run."""

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
