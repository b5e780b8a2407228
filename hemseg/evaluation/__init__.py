"""Evaluation: scoring a model on a split per label and plane (`hemseg evaluate`), report figures, and the seed
thresholds chosen on validation cases."""
