"""Batch predictions from a CSV file against any KServe endpoint.

    kgops predict --input rows.csv --target http://127.0.0.1:8080

Every column is a feature. The first line is a header when none of its fields is a number
(--header yes/no forces it). Rows go out in batches with bounded concurrency; transient
failures are retried (kserve_gitops.serving.client). The output CSV holds every input row, in input
order, with its line number, prediction and error; malformed rows are reported with their line
number and do not stop the others. Exit status: 0 all rows predicted, 1 some failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from kserve_gitops.repo import Repo, files
from kserve_gitops.serving import client

MAX_SHOWN_ERRORS = 20


@dataclass
class Row:
    line: int  # 1-based line number in the input file
    fields: list[str]
    features: list[float] | None = None
    prediction: Any = None
    error: str | None = None


class InputError(ValueError):
    """The input file cannot be used at all (as opposed to one malformed row)."""


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_rows(path: Path, width: int, header: str = "auto") -> tuple[list[str] | None, list[Row]]:
    """The header (or None) and every non-blank record, each parsed or marked malformed."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    rows: list[Row] = []
    names: list[str] | None = None
    with handle:
        reader = csv.reader(handle)
        try:
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                first = not rows and names is None
                if first and _is_header(fields, header):
                    names = [f.strip() for f in fields]
                    if len(names) != width:
                        raise InputError(
                            f"{path}:{reader.line_num}: header has {len(names)} columns "
                            f"({', '.join(names)}), expected {width} features (--features)"
                        )
                    continue
                rows.append(_parse(reader.line_num, fields, width))
        except csv.Error as exc:
            raise InputError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from exc
    return names, rows


def _is_header(fields: list[str], mode: str) -> bool:
    if mode != "auto":
        return mode == "yes"
    # A header has no numbers; a first data row with one bad value is a malformed row instead.
    return all(_number(f) is None for f in fields)


def _parse(line: int, fields: list[str], width: int) -> Row:
    row = Row(line, fields)
    if len(fields) != width:
        shown = ",".join(fields)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        row.error = f"expected {width} values, got {len(fields)}: {shown!r}"
        return row
    values = [_number(f) for f in fields]
    bad = [i for i, v in enumerate(values) if v is None]
    if bad:
        row.error = f"column {bad[0] + 1}: expected a number, got {fields[bad[0]]!r}"
        return row
    row.features = [v for v in values if v is not None]
    return row


class Progress:
    """Rows done/total and rate on stderr: in place on a terminal, a line every few s if not."""

    def __init__(self, total: int, stream: TextIO = sys.stderr):
        self.total, self.done, self.failed, self.retries = total, 0, 0, 0
        self.stream = stream
        self.tty = stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, rows: int, failed: int = 0) -> None:
        self.done += rows
        self.failed += failed
        now = time.monotonic()
        if now - self.last >= (0.2 if self.tty else 2.0):
            self.last = now
            self.show()

    def show(self, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        pct = 100 * self.done / self.total if self.total else 100
        text = (
            f"predict: {self.done}/{self.total} rows ({pct:.0f}%), {self.done / elapsed:.0f} rows/s"
            f", {self.failed} failed, {self.retries} retries"
        )
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + text, end=end, file=self.stream, flush=True)


async def _resolve(
    http: httpx.AsyncClient, batch: list[Row], args: argparse.Namespace, progress: Progress
) -> None:
    def retried(error: client.PredictionError, attempt: int) -> None:
        progress.retries += 1

    try:
        predictions = await client.apredict(
            http,
            args.target,
            args.model_name,
            [row.features or [] for row in batch],
            protocol=args.protocol,
            host_header=args.host_header,
            policy=client.RetryPolicy(retries=args.retries, backoff=args.backoff),
            on_retry=retried,
        )
    except client.PredictionError as exc:
        if exc.status in (400, 422) and len(batch) > 1:
            # The server refused the batch: send its rows one by one to find the bad ones.
            for row in batch:
                await _resolve(http, [row], args, progress)
            return
        for row in batch:
            row.error = f"server: {exc}"
        return
    for row, prediction in zip(batch, predictions, strict=True):
        row.prediction = prediction


async def predict_rows(rows: list[Row], args: argparse.Namespace, progress: Progress) -> None:
    valid = [row for row in rows if row.error is None]
    batches = [valid[i : i + args.batch] for i in range(0, len(valid), args.batch)]
    progress.update(len(rows) - len(valid), failed=len(rows) - len(valid))
    slots = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as http:

        async def run(batch: list[Row]) -> None:
            async with slots:
                await _resolve(http, batch, args, progress)
            progress.update(len(batch), failed=sum(row.error is not None for row in batch))

        await asyncio.gather(*(run(batch) for batch in batches))


def write_output(path: Path, names: list[str] | None, width: int, rows: list[Row]) -> None:
    """All rows in input order; temp file then rename, so a crash leaves no half-written file."""
    columns = names or [f"feature_{i + 1}" for i in range(width)]
    with files.replacing(path) as tmp, tmp.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["line", *columns, "prediction", "error"])
        for row in rows:
            fields = row.fields if len(row.fields) == width else [""] * width
            writer.writerow([row.line, *fields, _cell(row.prediction), row.error or ""])


def _cell(prediction: Any) -> str:
    if prediction is None:
        return ""
    return json.dumps(prediction) if isinstance(prediction, list) else str(prediction)


def default_output(input_path: Path) -> Path:
    return input_path.with_name(f"{input_path.stem}.predictions.csv")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kgops predict",
        description="Send CSV feature rows to a KServe endpoint; write rows with predictions.",
    )
    p.add_argument("--input", type=Path, required=True, help="CSV of feature rows")
    p.add_argument("--output", type=Path, help="output CSV (default: <input stem>.predictions.csv)")
    p.add_argument(
        "--target", default="http://127.0.0.1:8080", help="base URL (default: %(default)s)"
    )
    p.add_argument(
        "--host-header", help="Host header for an ingress, e.g. sklearn-iris.ns.example.com"
    )
    p.add_argument("--model-name", help="(default: the checkout's only model)")
    p.add_argument(
        "--protocol", choices=client.PROTOCOLS, default="v1", help="(default: %(default)s)"
    )
    p.add_argument("--batch", type=int, default=32, help="rows per request (default: %(default)s)")
    p.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight (default: %(default)s)"
    )
    p.add_argument("--features", type=int, default=4, help="values per row (default: %(default)s)")
    p.add_argument(
        "--header",
        choices=["auto", "yes", "no"],
        default="auto",
        help="first line is a header: auto = when none of its fields is a number",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=5,
        help="retries of a transient failure (default: %(default)s)",
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=0.2,
        help="first retry delay in s, doubling (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="per-request timeout in s (default: %(default)s)",
    )
    return p


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    args.model_name = args.model_name or repo.default_model()
    for name in ("batch", "concurrency", "features"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    output = args.output or default_output(args.input)
    try:
        names, rows = read_rows(args.input, args.features, args.header)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = Progress(len(rows))
    asyncio.run(predict_rows(rows, args, progress))
    progress.show(final=True)
    write_output(output, names, args.features, rows)

    failed = [row for row in rows if row.error]
    for row in failed[:MAX_SHOWN_ERRORS]:
        print(f"{args.input}:{row.line}: {row.error}", file=sys.stderr)
    if len(failed) > MAX_SHOWN_ERRORS:
        print(
            f"... and {len(failed) - MAX_SHOWN_ERRORS} more (error column of {output})",
            file=sys.stderr,
        )
    print(
        f"wrote {len(rows)} rows to {output} ({len(rows) - len(failed)} predicted, "
        f"{len(failed)} failed)",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
