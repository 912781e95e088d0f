"""Pinned upstream files and the user's cache they and the builds go into.

A pinned file comes from a local folder an environment variable names (an offline machine's
copy, laid out as the pins name the files), else from its pinned URL; its caller checks the
sha256 before anything is written."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path


def user_cache(name: str, override: str = "") -> Path:
    """$`override` when set, else <XDG_CACHE_HOME or ~/.cache>/kserve-gitops/<name>: outside
    the checkout, so that a fresh clone on the same machine finds what an earlier one built."""
    if override and os.environ.get(override):
        return Path(os.environ[override])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kserve-gitops" / name


def verify(
    data: bytes, expected: str, origin: str, file: str, pinned_in: str, error: type[Exception]
) -> bytes:
    """`data` when its sha256 is `expected`; else `error` naming where it came from, the file,
    the pin (`pinned_in`), and both hashes."""
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise error(
            f"{origin}: sha256 mismatch for {file}: {pinned_in} expects {expected}, got {got}"
        )
    return data


def fetch(
    file: str, url: str, folder_var: str, holding: str, error: type[Exception]
) -> tuple[bytes, str]:
    """(bytes, where they came from) of `file`: from $`folder_var`/`file` when the variable is
    set, else from `url`; `error` names the file, the variable and, offline, what to set."""
    folder = os.environ.get(folder_var)
    if folder:
        src = Path(folder) / file
        try:
            return src.read_bytes(), str(src)
        except OSError as exc:
            raise error(f"{src}: cannot read {file} from {folder_var} ({exc.strerror})") from None
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.read(), url
    except OSError as exc:
        raise error(
            f"{url}: download of {file} failed ({exc}); offline, set {folder_var} to a folder "
            f"holding {holding}"
        ) from None
