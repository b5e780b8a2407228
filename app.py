"""hemseg web app: `python app.py`, here or as a Hugging Face Space.

The model comes from $HEMSEG_MODEL (a Hub id, optionally @revision, or a local folder) and otherwise from the model
bundled with hemseg. Gradio's GRADIO_SERVER_NAME and GRADIO_SERVER_PORT choose the address (default
http://127.0.0.1:7860). Uploads and results live in a private folder of this process, removed when it stops (Ctrl-C
or SIGTERM) and otherwise after $HEMSEG_RETENTION_MIN minutes (default 60): see hemseg.app.storage.
"""

from hemseg.app.serve import main

if __name__ == "__main__":
    main()
