"""Which checkpoint a resume takes, and what a new run into a used folder meets (folders laid out as Accelerate's
``save_state`` leaves them; the real runs are in test_run.py)."""

import pytest

from hemseg.training.checkpoints import (
    COMMANDS_FILE,
    LAST_CHECKPOINT_FILE,
    clear_later_checkpoints,
    record_invocation,
    refuse_earlier_run,
    resolve_checkpoint,
)


def checkpoint(work_dir, k, complete=True):
    folder = work_dir / "checkpoints" / f"checkpoint_{k}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if complete:  # save_state writes the TrainingState last: a folder without it was cut short
        (folder / LAST_CHECKPOINT_FILE).write_bytes(b"state")
    return folder


def test_latest_is_the_newest_complete_checkpoint_by_epoch_not_by_name(tmp_path):
    checkpoint(tmp_path, 2)
    newest = checkpoint(tmp_path, 10)  # "checkpoint_10" sorts before "checkpoint_2" as text
    checkpoint(tmp_path, 11, complete=False)
    assert resolve_checkpoint("latest", tmp_path) == str(newest)
    assert resolve_checkpoint(str(newest), tmp_path) == str(newest)
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "elsewhere"), tmp_path)


def test_no_complete_checkpoint_to_resume_from_is_said(tmp_path):
    checkpoint(tmp_path, 0, complete=False)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        resolve_checkpoint("latest", tmp_path)


def test_a_cut_short_later_checkpoint_makes_room_and_a_complete_one_is_kept(tmp_path):
    checkpoint(tmp_path, 3)
    cut_short = checkpoint(tmp_path, 4, complete=False)
    clear_later_checkpoints(tmp_path, 4, is_main_process=True)  # resumed after epoch 4: epoch 5 is saved as _4
    assert not cut_short.exists() and (tmp_path / "checkpoints" / "checkpoint_3").exists()
    complete = checkpoint(tmp_path, 4)
    with pytest.raises(ValueError, match="later checkpoints than the one resumed from"):
        clear_later_checkpoints(tmp_path, 2, is_main_process=True)
    assert complete.exists()


def test_a_new_run_into_a_folder_with_checkpoints_is_refused(tmp_path):
    refuse_earlier_run(tmp_path, resuming=False)  # nothing there yet
    checkpoint(tmp_path, 0)
    refuse_earlier_run(tmp_path, resuming=True)
    with pytest.raises(ValueError, match="continue it with --resume-from-checkpoint latest"):
        refuse_earlier_run(tmp_path, resuming=False)


def test_each_invocation_is_recorded_in_order_and_a_fresh_run_starts_the_list(tmp_path):
    record_invocation(tmp_path, "first", resuming=False)
    record_invocation(tmp_path, "then", resuming=True)
    assert (tmp_path / COMMANDS_FILE).read_text() == "first\nthen\n"
    record_invocation(tmp_path, "again", resuming=False)
    assert (tmp_path / COMMANDS_FILE).read_text() == "again\n"
