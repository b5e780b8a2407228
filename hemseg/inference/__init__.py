"""Inference: ``Segmenter`` loads a model once and segments slices of any size; `hemseg predict` runs it on files."""

from hemseg.inference.segmenter import BUNDLED_MODEL, Prediction, Segmenter, cut, load_model

__all__ = ["BUNDLED_MODEL", "Prediction", "Segmenter", "cut", "load_model"]
