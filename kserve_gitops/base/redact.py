"""Secret material never leaves the harness: everything it writes under reports/ (commands.log,
state dumps, diagnostics, component logs, Locust reports, summaries) and every line it prints
goes through `text()`, by way of `write_text`, `copy_tree`, `sweep` and `echoing`.

- A Secret (kubectl or helm output, JSON or YAML, also inside the
  `kubectl.kubernetes.io/last-applied-configuration` annotation) keeps its keys; each value
  becomes `<redacted sha256=<hex> len=<bytes>>` of the decoded value, so two dumps can still be
  compared.
- Wherever else it is found: a PEM private key (also base64-encoded, as in a Secret or a
  kubeconfig's client-key-data), a JWT (ServiceAccount tokens), a bearer token, the password in
  a URL, the value of a command-line flag or a `key: value` / `key=value` pair whose name says
  credential (password, token, secret, api key, ...), the literal value of an environment
  variable whose name says so.

The credential scan (kserve_gitops.checks.secret_scan, gitleaks) then checks the report folder.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

MARK = "<redacted"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Names that say credential: environment variables (CREDS-BY-REF reads the same), keys, flags.
CREDENTIAL_NAME = re.compile(
    r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL|PRIVATE_KEY)", re.I
)


def fingerprint(value: bytes | str) -> str:
    """What stands in for a secret value: its sha256 and length in bytes."""
    raw = value.encode() if isinstance(value, str) else value
    return f"{MARK} sha256={hashlib.sha256(raw).hexdigest()} len={len(raw)}>"


# --- Secrets and environment variables in Kubernetes objects ------------------------------------


def _decoded(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value.encode()


def redact_object(obj: Any) -> Any:
    """`obj` (parsed JSON or YAML) with every Secret's values and every credential-named
    environment variable's literal value replaced by their fingerprints."""
    if isinstance(obj, list):
        return [redact_object(o) for o in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: redact_object(v) for k, v in obj.items()}
    if out.get("kind") == "Secret":
        for key, encoded in (("data", True), ("stringData", False)):
            values = out.get(key)
            if isinstance(values, dict):
                out[key] = {
                    k: v
                    if not isinstance(v, str) or v.startswith(MARK)
                    else fingerprint(_decoded(v) if encoded else v.encode())
                    for k, v in values.items()
                }
    name, value = out.get("name"), out.get("value")
    literal = isinstance(value, str) and value and not value.startswith(MARK)
    if literal and isinstance(name, str) and CREDENTIAL_NAME.search(name):
        out["value"] = fingerprint(str(value))
    annotations = (out.get("metadata") or {}).get("annotations") if "metadata" in out else None
    if isinstance(annotations, dict) and isinstance(annotations.get(LAST_APPLIED), str):
        try:
            applied = json.loads(annotations[LAST_APPLIED])
        except ValueError:
            applied = None
        if applied is not None:
            annotations[LAST_APPLIED] = json.dumps(redact_object(applied), separators=(",", ":"))
    return out


# Only text that may hold a Secret or an environment variable is parsed.
_STRUCTURED_HINT = re.compile(
    r"""kind["']?\s*:\s*["']?Secret\b|last-applied-configuration|name["']?\s*:\s*["']?[\w.-]*"""
    r"(?:SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL|PRIVATE_KEY)",
    re.I,
)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.M)


def _structured(text: str) -> str:
    if not _STRUCTURED_HINT.search(text):
        return text
    stripped = text.lstrip()
    if stripped[:1] in "{[":
        try:
            data = json.loads(text)
        except ValueError:
            pass
        else:
            redacted = redact_object(data)
            if redacted == data:
                return text
            return json.dumps(redacted, indent=4) + ("\n" if text.endswith("\n") else "")
    return "".join(_yaml_doc(doc) for doc in re.split(r"(?m)(?=^---[ \t]*$)", text))


def _yaml_doc(doc: str) -> str:
    """One YAML document (with its leading `---` line, if any), its Secrets redacted; a
    document that does not parse gets the line-wise redaction of `data:` blocks."""
    if not _STRUCTURED_HINT.search(doc):
        return doc
    head = ""
    if _DOC_SPLIT.match(doc):
        head, _, doc = doc.partition("\n")
        head += "\n"
    try:
        data = yaml.load(doc, Loader=_LOADER)
    except yaml.YAMLError:
        return head + _yaml_lines(doc)
    if not isinstance(data, dict | list):
        return head + _yaml_lines(doc)
    redacted = redact_object(data)
    if redacted == data:
        return head + doc
    return head + yaml.dump(redacted, Dumper=_DUMPER, sort_keys=False, width=1 << 16)


_DATA_BLOCK = re.compile(r"^(\s*)(data|stringData):\s*$")
_ENTRY = re.compile(r"^(\s*)([^:#\s][^:]*):[ \t]+(\S.*?)\s*$")


def _yaml_lines(doc: str) -> str:
    """The values under `data:` / `stringData:` of a Secret in YAML that does not parse as a
    whole (a truncated or mixed output): each `key: value` line below them, by indentation."""
    if not re.search(r"^\s*kind:\s*Secret\b", doc, re.M):
        return doc
    out: list[str] = []
    block: tuple[int, bool] | None = None  # (indent of `data:`, encoded)
    for line in doc.splitlines(keepends=True):
        head = _DATA_BLOCK.match(line)
        entry = _ENTRY.match(line)
        if head:
            block = (len(head.group(1)), head.group(2) == "data")
        elif block and entry and len(entry.group(1)) > block[0]:
            value = entry.group(3).strip("'\"")
            if not value.startswith(MARK):
                raw = _decoded(value) if block[1] else value.encode()
                end = "\n" if line.endswith("\n") else ""
                line = f"{entry.group(1)}{entry.group(2)}: {fingerprint(raw)}{end}"
        elif line.strip():
            block = None
        out.append(line)
    return "".join(out)


# --- patterns, wherever they appear --------------------------------------------------------------

_PEM = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----"
    r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\]*)",
    re.S,
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}={0,2}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(
    r"(?i)(\bauthorization[\"']?\s*[:=]?\s*[\"']?(?:bearer|basic|token)\s+|\bbearer\s+)"
    r"([A-Za-z0-9._~+/=-]{8,})"
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)([^\s@/]+)(@)", re.I)
_WORD = (
    r"(?:password|passwd|passphrase|token|secret|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|client[_-]?key[_-]?data|client[_-]?secret|credentials?)"
)
_LITERAL = r"""("[^"\n]*"|'[^'\n]*'|[^\s,;}\]"'#]+)"""
# --from-literal=<key>=<value> (kubectl create secret): the key stays, the value goes.
_FROM_LITERAL = re.compile(r"(--from-literal[= ][^=\s]+=)(\S+)")
# A flag whose name ends with such a word (`--password`, `--client-secret`; not
# `--token-auth-file`, which names a file).
_FLAG = re.compile(rf"(?i)((?<![\w-])--?[\w-]*{_WORD})(=|[ \t]+){_LITERAL}")
# A key that ends with such a word (`password:`, `"apiToken": `, `db_password=`; not
# `secretName:`), matched from the word on: the rest of the key stays as it is. (The lookahead
# of the words' first letters makes the search several times faster over megabytes of logs.)
_KEYED = re.compile(rf"""(?i)(?=[ptsac])({_WORD}["']?[ \t]*[:=][ \t]*){_LITERAL}""")
# An environment variable named as a credential with a literal value, in JSON or YAML that did
# not parse as a whole (a log line, a truncated output).
_NAMED = r"[\w.-]*(?:SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL|PRIVATE_KEY)[\w.-]*"
_ENV_JSON = re.compile(rf"""(?i)("name"\s*:\s*"{_NAMED}"\s*,\s*"value"\s*:\s*)("[^"\n]*")""")
_ENV_YAML = re.compile(
    rf"""(?im)(^[ \t-]*name:[ \t]*["']?{_NAMED}["']?[ \t]*\n[ \t]+value:[ \t]*)(\S[^\n]*)"""
)
# Values that are no secret: a reference, a path, a flag, a boolean, a number, a placeholder.
_NOT_SECRET = re.compile(
    r"""^["']?(?:$|<|\$|\{|\[|\*|/|\./|~|-|\\$|true\b|false\b|null\b|none\b|\d{1,6}["']?$|"""
    r"secretKeyRef|valueFrom|REDACTED)"
    "",
    re.I,
)


def _mask_value(value: str) -> str:
    if value.startswith(MARK) or _NOT_SECRET.match(value):
        return value
    quote = value[0] if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) > 1 else ""
    inner = value[1:-1] if quote else value
    if not inner or _NOT_SECRET.match(inner):
        return value
    return f"{quote}{fingerprint(inner)}{quote}"


def _base64_secret(match: re.Match[str]) -> str:
    blob = match.group(0)
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4))
    except (binascii.Error, ValueError):
        return blob
    inner = raw.decode("latin-1")
    if "PRIVATE KEY" in inner or _JWT.search(inner):
        return fingerprint(raw)
    return blob


def patterns(text: str) -> str:
    """Private keys, tokens and credential-named values wherever they appear in `text`."""
    text = _PEM.sub(lambda m: fingerprint(m.group(0)), text)
    text = _BASE64.sub(_base64_secret, text)
    text = _JWT.sub(lambda m: fingerprint(m.group(0)), text)
    text = _BEARER.sub(lambda m: m.group(1) + _mask_value(m.group(2)), text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + fingerprint(m.group(2)) + m.group(3), text)
    text = _FROM_LITERAL.sub(lambda m: m.group(1) + _mask_value(m.group(2)), text)
    text = _FLAG.sub(lambda m: m.group(1) + m.group(2) + _mask_value(m.group(3)), text)
    text = _ENV_JSON.sub(lambda m: m.group(1) + _mask_value(m.group(2)), text)
    text = _ENV_YAML.sub(lambda m: m.group(1) + _mask_value(m.group(2).rstrip()), text)
    return _KEYED.sub(lambda m: m.group(1) + _mask_value(m.group(2)), text)


def text(value: str) -> str:
    """`value` as the harness may write or print it: Secrets with keys and fingerprints, and
    no private key, token or credential-named value."""
    if not value:
        return value
    return patterns(_structured(value))


# --- the writers ---------------------------------------------------------------------------------


def write_text(path: Path, value: str, append: bool = False) -> None:
    """Write (or append) `value`, redacted, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w") as fh:
        fh.write(text(value))


def _redact_file(src: Path, dest: Path) -> None:
    raw = src.read_bytes()
    if b"\0" in raw[:8192]:  # binary (a plot): nothing to redact line-wise
        if src != dest:
            dest.write_bytes(raw)
        return
    decoded = raw.decode("utf-8", errors="surrogateescape")
    redacted = text(decoded)
    if src != dest or redacted != decoded:
        dest.write_bytes(redacted.encode("utf-8", errors="surrogateescape"))


def copy_tree(src: Path, dest: Path) -> None:
    """Copy a folder of logs (or one file) into a report, every file redacted."""
    if src.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _redact_file(src, dest)
        return
    for folder, _dirs, names in os.walk(src):
        target = dest / Path(folder).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            _redact_file(Path(folder, name), target / name)


def sweep(folder: Path) -> None:
    """Redact every file under `folder` in place: for what a child process wrote (Locust's CSV
    and HTML reports)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _redact_file(path, path)


def echoing(echo: Callable[[str], None]) -> Callable[[str], None]:
    """`echo`, each line redacted before it reaches the terminal."""
    if getattr(echo, "redacting", False):
        return echo

    def redacted(line: str) -> None:
        echo(text(line))

    redacted.redacting = True  # type: ignore[attr-defined]
    return redacted
