"""Publishing to the Hugging Face Hub: a token and a repository checked before long work, an
upload that keeps the local copy and says how to push it later when it fails.

    api = check_hub_access("me/iwslt-calibration", private=False, repo_type="dataset",
                           later="calibrate without --push-to-hub and push later with `hf upload`")
    ...                                                    # hours of work
    url = upload(api, folder, "me/iwslt-calibration", repo_type="dataset",
                 allow_patterns=["README.md", "data/*"], later=f"hf upload ... {folder}")
    hub_reachable()     # False only when the Hub's host name cannot be resolved: no network
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from bild_align.errors import UserError, first_line

KINDS = {"dataset": "dataset", "model": "model"}


@functools.cache
def hub_reachable() -> bool:
    """Whether the Hub's host name resolves (asked once a process). Offline mode, a proxy
    (which may resolve names itself) or an answer of any kind count as reachable: only a
    certain "no network" skips the Hub."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    proxies = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in proxies):
        return True
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True


def hub_url(repo_id: str, repo_type: str) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{prefix}{repo_id}"


def check_hub_access(
    repo_id: str, private: bool, *, repo_type: str, later: str, option: str = "--push-to-hub"
):
    """A token that may write `repo_id` (the repository is created now if it does not exist);
    returns the `HfApi` to upload with. `later` says how to do without the push for now;
    `option` is the option that named the repository, as the user typed it."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise UserError(
            f"pushing to {repo_id} needs a Hugging Face token: set HF_TOKEN or run `hf auth login`"
        )
    api = HfApi(token=token)
    try:
        api.whoami()
    except Exception as error:  # noqa: BLE001 - network, offline mode and bad tokens alike
        raise UserError(
            f"{option} {repo_id}: cannot reach the Hub with this token "
            f"({type(error).__name__}: {first_line(error)}); check the network and the token, "
            f"or {later}"
        ) from None
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    except Exception as error:  # noqa: BLE001 - a bad id, no write permission
        raise UserError(
            f"{option} {repo_id}: cannot create or write that {KINDS[repo_type]} "
            f"repository ({type(error).__name__}: {first_line(error)})"
        ) from None
    return api


def upload(
    api,
    folder: Path,
    repo_id: str,
    *,
    repo_type: str,
    later: str,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
) -> str:
    """Upload `folder` to the repository `check_hub_access` vetted; the URL."""
    try:
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
        )
    except Exception as error:  # noqa: BLE001 - network, permission and offline errors alike
        raise UserError(
            f"could not push to the Hub {KINDS[repo_type]} {repo_id}: {type(error).__name__} "
            f"(is there a network, and may this token write there?). It is saved in {folder}; "
            f"push it later with `{later}`"
        ) from None
    return hub_url(repo_id, repo_type)
