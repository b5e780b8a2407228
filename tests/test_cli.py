"""The command line a user meets: `hemseg` (installed by `pip install .`) and `python -m hemseg`."""

import shutil

from conftest import run


def test_help_lists_the_users_commands_and_the_lab_apart():
    result = run(["-m", "hemseg", "--help"])
    listing = result.stdout.split("commands:")[1].split("\n\n")[0]  # up to the blank line after it
    commands = [line.split()[0] for line in listing.splitlines()[2:] if line[4:5].isalpha()]
    assert commands == ["prepare", "train", "predict", "evaluate", "lab"]
    assert "hemseg lab --help" in result.stdout
    for tool in ("bench", "calibrate", "ceilings", "compare", "robustness"):
        assert f"    {tool}" not in result.stdout.split("lab ")[0]  # no lab tool among the user's commands
    lab = run(["-m", "hemseg", "lab"]).stdout  # the group alone lists its tools
    assert all(tool in lab for tool in ("bench", "calibrate", "ceilings", "compare", "robustness"))
    assert run(["-m", "hemseg", "lab", "compare", "--help"]).stdout.startswith("usage: hemseg lab compare")


def test_the_installed_command_is_the_same_command_line():
    hemseg = shutil.which("hemseg")
    assert hemseg, "no `hemseg` command: pip install -e . (requirements-dev.txt does)"
    assert run(["--help"], launcher=(hemseg,)).stdout == run(["-m", "hemseg", "--help"]).stdout
    assert "--recipe" in run(["train", "--help"], launcher=(hemseg,)).stdout


def test_train_takes_the_scripts_flags_and_says_what_is_wrong_in_one_line(tmp_path):
    assert (
        run(["-m", "hemseg", "train", "--help"]).stdout.split("options:")[1]
        == run(["train.py", "--help"]).stdout.split("options:")[1]
    )
    bad = run(
        ["-m", "hemseg", "train", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--set", "x=1"],
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --set 'x=1': write section.key=value")
