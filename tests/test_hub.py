import http.server
import os
import socket
import threading

import pytest
from conftest import run
from huggingface_hub.errors import OfflineModeIsEnabled

from hemseg.hub import push_folder


class RecordingApi:
    """Stands in for HfApi at the network boundary: records what would be uploaded."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], sorted(os.listdir(kwargs["folder_path"]))))


def test_push_uploads_the_folder_as_it_is(trained_model):
    api = RecordingApi()
    assert push_folder(trained_model, "someone/model", private=True, api=api) == 0
    assert api.calls[0] == ("create_repo", "someone/model", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert api.calls[1][0] == "upload_folder" and api.calls[1][2] == sorted(os.listdir(trained_model))


def test_failed_push_says_why_and_keeps_the_model(trained_model, capsys):
    class OfflineApi(RecordingApi):
        def create_repo(self, repo_id, **kwargs):
            raise OfflineModeIsEnabled("Cannot reach the Hub: offline mode is enabled")

    before = sorted(os.listdir(trained_model))
    assert push_folder(trained_model, "someone/model", api=OfflineApi()) == 1
    message = capsys.readouterr().err
    assert "push to someone/model failed" in message and "offline" in message and "unchanged" in message
    assert sorted(os.listdir(trained_model)) == before


def test_push_to_an_unreachable_hub_says_why(trained_model):
    # The real client and a real connection, refused: a closed port on this machine stands for a network that is down.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free now, and nothing listens on it
    code = (
        "import sys, pathlib; from hemseg.hub import push_folder; "
        "raise SystemExit(push_folder(pathlib.Path(sys.argv[1]), 'someone/model'))"
    )
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": "hf_not_a_token"}
    result = run(["-c", code, str(trained_model)], env=env, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "push to someone/model failed" in result.stderr and "retry with: hf upload" in result.stderr


class RefusingHub(http.server.BaseHTTPRequestHandler):
    """A stand-in Hub endpoint that refuses every request with ``status``, as the Hub refuses a bad token (401)
    or a token without write access (403)."""

    status = 401

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": "Invalid credentials in Authorization header"}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = answer

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.mark.parametrize("status, hint", [(401, "hf auth login"), (403, "may not write to someone/model")])
def test_push_refused_by_the_hub_says_why(trained_model, status, hint):
    handler = type("Refusing", (RefusingHub,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "import sys, pathlib; from hemseg.hub import push_folder; "
        "raise SystemExit(push_folder(pathlib.Path(sys.argv[1]), 'someone/model'))"
    )
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_TOKEN": "hf_bad"}
    before = sorted(os.listdir(trained_model))
    try:
        result = run(["-c", code, str(trained_model)], env=env, check=False)
    finally:
        server.shutdown()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(status) in result.stderr and hint in result.stderr and "retry with: hf upload" in result.stderr
    assert sorted(os.listdir(trained_model)) == before
