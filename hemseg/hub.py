"""Sharing a model folder on the Hugging Face Hub."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import OfflineModeIsEnabled


def is_path_not_hub_id(spec: str) -> bool:
    """True for what cannot be a Hub id (``name`` or ``owner/name``): ``./x``, ``/x``, ``a/b/c``."""
    return spec.startswith((".", "/")) or spec.count("/") > 1


# What a refusal by the Hub means for the person pushing, by HTTP status.
HINTS = {
    401: "The Hub did not accept the token: log in with `hf auth login`, or set HF_TOKEN to a write token.\n",
    403: "The token may not write to {repo_id}: use a token with write access to that user or organisation.\n",
}


def push_folder(folder: Path, repo_id: str, private: bool = False, api: HfApi | None = None) -> int:
    """Upload ``folder`` as it is to the model repository ``repo_id``; 0 on success.

    A failure (offline, no network, no or bad token, no permission) is explained on stderr and returns 1; the local
    folder is never touched, so the push can simply be retried.
    """
    api = api or HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=f"Upload {folder.name} from hemseg"
        )
    # httpx2.HTTPError: huggingface_hub's transport; the base of HfHubHTTPError (refused, bad token, no permission)
    # and of the connection errors and timeouts it lets through (no network, unreachable endpoint).
    except (httpx2.HTTPError, OfflineModeIsEnabled, OSError, ValueError) as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = HINTS.get(status, "").format(repo_id=repo_id)
        print(
            f"error: the push to {repo_id} failed: {err}\n{hint}The model folder {folder} is complete and unchanged; "
            f"retry with: hf upload {repo_id} {folder}",
            file=sys.stderr,
        )
        return 1
    print(f"pushed {folder} to {commit.commit_url if hasattr(commit, 'commit_url') else repo_id}")
    return 0
