"""Local stand-ins for the places Flux pulls from, on loopback only: this repository over Git's
smart HTTP protocol (`git http-backend`), the cached upstream charts as a Helm HTTP repository,
and as an OCI registry (the distribution registry, built from its Go module) for the charts the
manifests pull from `oci://`. Each server is started and stopped by the harness."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import yaml

from kserve_gitops.base.tools import stop_process
from kserve_gitops.repo import Repo

# What Flux's GitRepository reads (clusters/base/gitrepository.yaml packs only these).
SERVED_DIRS = ("charts", "clusters", "environments", "platform")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "kserve-gitops e2e",
    "GIT_AUTHOR_EMAIL": "e2e@kserve-gitops.invalid",
    "GIT_COMMITTER_NAME": "kserve-gitops e2e",
    "GIT_COMMITTER_EMAIL": "e2e@kserve-gitops.invalid",
}


class SourceError(Exception):
    """A local source that could not be prepared or started; the message says which and why."""


def _git(args: Sequence[str], cwd: Path) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_IDENTITY},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SourceError(f"{cwd}: `git {' '.join(args)}` exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def work_tree_files(repo: Repo) -> list[Path]:
    """The files of the work tree Flux reads, tracked or not, minus what .gitignore excludes:
    what the offline checks read, so the cluster gets the same manifests."""
    root = repo.root
    out = _git(
        ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *SERVED_DIRS], root
    )
    return sorted({Path(p) for p in out.split("\0") if p and (root / p).is_file()})


def snapshot(repo: Repo, dest: Path, branch: str = "main") -> str:
    """A git repository at `dest` whose `branch` holds one commit of the work tree's files (see
    work_tree_files), and a bare clone `dest`.git that the Git server serves. Returns the commit."""
    shutil.rmtree(dest, ignore_errors=True)
    for rel in work_tree_files(repo):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo.root / rel, target)
    _git(["init", "-q", "-b", branch], dest)
    _git(["add", "-A"], dest)
    _git(["commit", "-q", "-m", "work tree snapshot for the Flux e2e"], dest)
    bare = bare_path(dest)
    shutil.rmtree(bare, ignore_errors=True)
    _git(["clone", "-q", "--bare", str(dest), str(bare)], dest.parent)
    return _git(["rev-parse", "HEAD"], dest).strip()


def bare_path(work: Path) -> Path:
    return work.with_name(work.name + ".git")


def publish(work: Path, message: str, branch: str = "main") -> str:
    """Commit every change in `work` and push it to the served bare repository; the commit."""
    _git(["add", "-A"], work)
    _git(["commit", "-q", "-m", message], work)
    _git(["push", "-q", str(bare_path(work)), f"{branch}:{branch}"], work)
    return _git(["rev-parse", "HEAD"], work).strip()


class _Quiet:
    def log_message(self, format: str, *args: object) -> None:
        del format, args  # requests are in the controllers' logs; keep the console for progress


class _GitHandler(_Quiet, BaseHTTPRequestHandler):
    """Git's smart HTTP protocol: every request goes to `git http-backend` (CGI)."""

    project_root: Path

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        parsed = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": parsed.path,
            "QUERY_STRING": parsed.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        headers = [line.split(":", 1) for line in head.decode().splitlines() if ":" in line]
        status = next((v.strip() for k, v in headers if k.lower() == "status"), "200 OK")
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason or None)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _StaticHandler(_Quiet, SimpleHTTPRequestHandler):
    pass


@dataclass
class HTTPServer:
    """A threaded HTTP server on 127.0.0.1:port, serving until stop()."""

    port: int
    handler: type[BaseHTTPRequestHandler] | partial[BaseHTTPRequestHandler]
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        except OSError as exc:
            raise SourceError(f"127.0.0.1:{self.port}: cannot listen ({exc.strerror})") from exc
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def git_server(project_root: Path, port: int) -> HTTPServer:
    """Serves every bare repository under `project_root` at http://127.0.0.1:port/<name>.git."""
    handler = type("GitHandler", (_GitHandler,), {"project_root": project_root})
    return HTTPServer(port, handler)


def helm_repositories(
    helm: Path, charts: Iterable[tuple[str, Path]], dest: Path, base_url: str
) -> dict[str, str]:
    """`helm package` each (repository, chart folder) into dest/<repository>/ and index it:
    {repository: its URL under base_url}."""
    shutil.rmtree(dest, ignore_errors=True)
    urls: dict[str, str] = {}
    for repo, chart in charts:
        out = dest / repo
        out.mkdir(parents=True, exist_ok=True)
        _run([str(helm), "package", str(chart), "-d", str(out)], f"helm package {chart}")
        urls[repo] = f"{base_url}/{repo}"
    for repo, url in urls.items():
        _run(
            [str(helm), "repo", "index", str(dest / repo), "--url", url], f"helm repo index {repo}"
        )
    return urls


def static_server(root: Path, port: int) -> HTTPServer:
    return HTTPServer(port, partial(_StaticHandler, directory=str(root)))


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SourceError(
            f"{what}: exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout


@dataclass
class Registry:
    """The distribution registry (OCI) on 127.0.0.1:port, storing under `root`."""

    binary: Path
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "registry.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
            "http": {"addr": self.address},
        }
        (self.root / "config.yml").write_text(yaml.safe_dump(config))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", str(self.root / "config.yml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # No telemetry export: nothing may leave the machine.
                env={**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SourceError(f"registry exited {self.proc.returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise SourceError(f"registry on {self.address}: no answer in {timeout_s:.0f}s ({self.log})")

    def push(self, helm: Path, chart: Path, repository: str, workdir: Path) -> str:
        """`helm package` + `helm push` the chart folder into oci://<address>/<repository>;
        the chart's reference."""
        workdir.mkdir(parents=True, exist_ok=True)
        out = _run([str(helm), "package", str(chart), "-d", str(workdir)], f"helm package {chart}")
        archive = out.strip().rsplit(": ", 1)[-1]
        target = f"oci://{self.address}/{repository}"
        _run([str(helm), "push", archive, target, "--plain-http"], f"helm push {archive}")
        name = yaml.safe_load((chart / "Chart.yaml").read_text())["name"]
        return f"{target}/{name}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None
