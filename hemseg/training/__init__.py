"""Training: recipes, augmentation, the resident data, the loop run by `train.py` (`hemseg train`), checkpoints,
and the model folder with its card."""
