"""hemseg web app: `python app.py`, here or as a Hugging Face Space.

The model comes from $HEMSEG_MODEL (a Hub id, optionally @revision, or a local folder) and otherwise from the model
bundled with hemseg. Gradio's GRADIO_SERVER_NAME and GRADIO_SERVER_PORT choose the address (default
http://127.0.0.1:7860).
"""

from hemseg.app.ui import build_app

MAX_UPLOAD = "100mb"

if __name__ == "__main__":
    build_app().launch(max_file_size=MAX_UPLOAD, share=False)
