"""The web app (`python app.py`): uploads in, segmentation, overlay and scores out."""

from hemseg.app.ui import build_app

__all__ = ["build_app"]
