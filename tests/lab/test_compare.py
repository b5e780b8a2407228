from conftest import run


def test_compare_lists_runs_with_their_best_epoch(trained_model):
    result = run(["-m", "hemseg", "lab", "compare", f"{trained_model}-checkpoints"])
    header, _, row = result.stdout.strip().splitlines()
    assert "hemangioma Dice_fg" in header and "parameters (M)" in header
    assert "| depth |" in header and row.startswith(f"| {trained_model.name} | 4 | 3 | ") and "1 of 1" in row
