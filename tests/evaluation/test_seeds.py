from hemseg.evaluation.seeds import choose_seeds


def row(label, seed, pooled):
    return {"label": label, "seed": seed, "pooled_dice": pooled}


def test_choose_seeds_takes_the_highest_pooled_dice_and_the_lower_seed_on_a_tie():
    table = [
        row("hemangioma", None, 0.60),
        row("hemangioma", 0.9, 0.64),
        row("hemangioma", 0.95, 0.66),
        row("hemangioma", 0.99, 0.66),
        row("vertebral_body", None, 0.88),
        row("vertebral_body", 0.9, 0.88),  # no better than no seed: no seed
        row("vertebral_body", 0.95, 0.87),
        row("nothing", 0.9, 0.0),  # in any order
        row("nothing", None, 0.0),
        row("everywhere", 0.9, 1.0),  # empty truth and prediction everywhere score 1: no seed needed
        row("everywhere", None, 1.0),
    ]
    assert choose_seeds(table) == {"hemangioma": 0.95}
