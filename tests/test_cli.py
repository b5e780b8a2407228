"""The command line a user meets: `hemseg` (installed by `pip install .`) and `python -m hemseg`."""

import shutil

import pytest
from conftest import run

from hemseg.cli import build_parser, main


def test_help_lists_the_users_commands_and_the_lab_apart(capsys):
    text = build_parser().format_help()
    listing = text.split("commands:")[1].split("\n\n")[0]  # up to the blank line after it
    commands = [line.split()[0] for line in listing.splitlines()[2:] if line[4:5].isalpha()]
    assert commands == ["prepare", "train", "predict", "evaluate", "lab"]
    assert "hemseg lab --help" in text
    assert main(["lab"]) == 0  # the group alone lists its tools
    lab = capsys.readouterr().out
    assert all(tool in lab for tool in ("bench", "calibrate", "ceilings", "compare", "robustness", "scale"))
    with pytest.raises(SystemExit):
        main(["lab", "compare", "--help"])
    assert capsys.readouterr().out.startswith("usage: hemseg lab compare")


def test_the_installed_command_is_the_same_command_line():
    hemseg = shutil.which("hemseg")
    assert hemseg, "no `hemseg` command: pip install -e . (requirements-dev.txt does)"
    assert run(["--help"], launcher=(hemseg,)).stdout == build_parser().format_help()
    assert "--recipe" in run(["train", "--help"], launcher=(hemseg,)).stdout


def test_train_takes_the_scripts_flags_and_says_what_is_wrong_in_one_line(tmp_path, capsys):
    script = run(["train.py", "--help"]).stdout.split("options:")[1]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert capsys.readouterr().out.split("options:")[1] == script
    assert main(["train", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--set", "x=1"]) == 2
    assert capsys.readouterr().err.startswith("error: --set 'x=1': write section.key=value")
    # A recipe that cannot work is refused before anything loads, in one line (its rules: test_recipe.py).
    blur = ["train", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--set", "augmentation.blur_p=-1"]
    assert main(blur) == 2 and not (tmp_path / "o-checkpoints").exists()
    assert capsys.readouterr().err == "error: augmentation.blur_p must be between 0 and 1\n"
