"""The web app (`python app.py`): uploads in, segmentation, overlay and scores out.

``hemseg.app.storage`` imports no Gradio, so the app can choose Gradio's upload folder before Gradio is imported;
the app itself is ``hemseg.app.ui.build_app``.
"""
