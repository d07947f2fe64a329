"""``tcworker verify TASK_ID --root-url URL --public-key KEY [--run N]``: check a run's chain of trust.

What a downstream consumer would do before trusting a task's output, against any deployment:
download ``public/chain-of-trust.json`` and its ``.sig`` through the queue's artifact URLs (as
scriptworker does: redirects followed, content-encoding decoded), check the ed25519 signature
over exactly the downloaded bytes, that the document names this task and run, then download
every artifact it lists and compare the sha256 of the bytes received. When the run also has
``public/provenance.intoto.jsonl`` the DSSE envelope's signature is checked and every subject's
digest compared with what was downloaded. The result is a table (``rich``) and an exit status:
0 when every check passed, 1 otherwise. Artifacts are streamed and hashed, never held whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import taskcluster.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.table import Table

from tcworker.provenance import slsa
from tcworker.provenance.keys import signature_valid

CHAIN_OF_TRUST = "public/chain-of-trust.json"
SIGNATURE = "public/chain-of-trust.json.sig"
PROVENANCE = "public/provenance.intoto.jsonl"
SMALL_DOCUMENT = 16 << 20  # bytes: the signed documents are read into memory, artifacts never


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Report:
    task_id: str
    run_id: int | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, what: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(what, ok, detail))


class _Fetch:
    """Artifact downloads of one run through the queue's artifact endpoint."""

    def __init__(self, queue: Any, session: aiohttp.ClientSession, task_id: str, run_id: int) -> None:
        self.queue = queue
        self.session = session
        self.task_id = task_id
        self.run_id = run_id
        self.signed = bool(queue.options.get("credentials", {}).get("clientId"))

    def url(self, name: str) -> str:
        method = (
            self.queue.buildSignedUrl
            if self.signed and not name.startswith("public/")
            else self.queue.buildUrl
        )
        return str(method("getArtifact", self.task_id, str(self.run_id), name))

    async def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        async with self.session.get(self.url(name)) as resp:
            if resp.status != 200:
                raise FetchError(f"HTTP {resp.status} downloading {name}")
            async for chunk in resp.content.iter_chunked(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    async def small(self, name: str) -> bytes:
        async with self.session.get(self.url(name)) as resp:
            if resp.status != 200:
                raise FetchError(f"HTTP {resp.status} downloading {name}")
            data = await resp.content.read(SMALL_DOCUMENT + 1)
        if len(data) > SMALL_DOCUMENT:
            raise FetchError(f"{name} is larger than {SMALL_DOCUMENT} bytes")
        return data


class FetchError(Exception):
    pass


async def verify(
    task_id: str,
    root_url: str,
    key: Ed25519PublicKey,
    run_id: int | None = None,
    credentials: dict[str, str] | None = None,
) -> Report:
    """Run every check; never raises for what it finds (the report says it)."""
    report = Report(task_id, run_id)
    options: dict[str, Any] = {"rootUrl": root_url.rstrip("/")}
    if credentials:
        options["credentials"] = credentials
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=120)) as session:
        queue = taskcluster.aio.Queue(options, session=session)
        if run_id is None:
            try:
                runs = (await queue.status(task_id))["status"].get("runs", [])
            except Exception as e:  # the client's errors carry the HTTP status and message
                report.add("task", False, f"cannot read the status of task {task_id}: {e}")
                return report
            if not runs:
                report.add("task", False, f"task {task_id} has no runs")
                return report
            run_id = len(runs) - 1
        report.run_id = run_id
        fetch = _Fetch(queue, session, task_id, run_id)
        await _check_documents(fetch, key, report)
    return report


async def _check_documents(fetch: _Fetch, key: Ed25519PublicKey, report: Report) -> None:
    try:
        body, signature = await asyncio.gather(fetch.small(CHAIN_OF_TRUST), fetch.small(SIGNATURE))
    except (FetchError, aiohttp.ClientError) as e:
        report.add(CHAIN_OF_TRUST, False, f"cannot download the chain-of-trust document: {e}")
        return
    if not signature_valid(key, signature, body):
        report.add(
            SIGNATURE, False, f"ed25519 signature ({len(signature)} bytes) does not verify with the key"
        )
        return
    report.add(SIGNATURE, True, "ed25519 signature verifies with the given public key")
    try:
        doc = json.loads(body)
        listed: dict[str, Any] = dict(doc["artifacts"])
    except (ValueError, KeyError, TypeError) as e:
        report.add(CHAIN_OF_TRUST, False, f"not a chain-of-trust document: {e}")
        return
    same_run = doc.get("taskId") == fetch.task_id and doc.get("runId") == fetch.run_id
    report.add(
        CHAIN_OF_TRUST,
        same_run,
        f"version {doc.get('chainOfTrustVersion')}, worker {doc.get('workerGroup')}/{doc.get('workerId')}"
        if same_run
        else f"document is for task {doc.get('taskId')} run {doc.get('runId')}, not this run",
    )
    observed = {
        CHAIN_OF_TRUST: hashlib.sha256(body).hexdigest(),
        SIGNATURE: hashlib.sha256(signature).hexdigest(),
    }
    limit = asyncio.Semaphore(8)

    async def one(name: str, expected: Any) -> None:
        want = expected.get("sha256") if isinstance(expected, dict) else None
        if not isinstance(want, str):
            report.add(name, False, "listed without a sha256")
            return
        async with limit:
            try:
                got = await fetch.sha256(name)
            except (FetchError, aiohttp.ClientError) as e:
                report.add(name, False, f"cannot download: {e}")
                return
        observed[name] = got
        report.add(
            name, got == want, f"sha256 {got}" if got == want else f"sha256 {got}, certificate says {want}"
        )

    await asyncio.gather(*(one(name, listed[name]) for name in sorted(listed)))
    await _check_provenance(fetch, key, report, observed)


async def _check_provenance(
    fetch: _Fetch, key: Ed25519PublicKey, report: Report, observed: dict[str, str]
) -> None:
    try:
        bundle = await fetch.small(PROVENANCE)
    except FetchError:
        return  # optional: enableProvenance may be off, or the run predates it
    except aiohttp.ClientError as e:
        report.add(PROVENANCE, False, f"cannot download: {e}")
        return
    lines = [line for line in bundle.splitlines() if line.strip()]
    statements = []
    for line in lines:
        try:
            opened = slsa.open_envelope(json.loads(line), key)
        except ValueError:
            opened = None
        if opened is None:
            report.add(PROVENANCE, False, "a DSSE envelope does not verify with the key")
            return
        statements.append(opened)
    if not statements:
        report.add(PROVENANCE, False, "no DSSE envelope in the bundle")
        return
    problems = []
    count = 0
    for doc in statements:
        if doc.get("predicateType") != slsa.PREDICATE_TYPE:
            problems.append(f"predicateType {doc.get('predicateType')!r}")
        for subject in doc.get("subject") or []:
            count += 1
            name, digest = subject.get("name"), (subject.get("digest") or {}).get("sha256")
            if name not in observed:
                try:
                    observed[name] = await fetch.sha256(name)
                except (FetchError, aiohttp.ClientError) as e:
                    problems.append(f"subject {name}: {e}")
                    continue
            if observed[name] != digest:
                problems.append(f"subject {name}: sha256 {observed[name]}, provenance says {digest}")
    detail = (
        "; ".join(problems)
        if problems
        else f"DSSE signature verifies; {count} subjects match their downloads"
    )
    report.add(PROVENANCE, not problems, detail)


def render(report: Report, console: Console) -> None:
    table = Table(title=f"chain of trust of task {report.task_id} run {report.run_id}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in report.checks:
        table.add_row(c.what, "[green]ok[/green]" if c.ok else "[red]FAILED[/red]", c.detail)
    console.print(table)
    bad = [c.what for c in report.checks if not c.ok]
    if bad:
        console.print(f"[red]verification FAILED[/red]: {', '.join(bad)}")
    else:
        console.print("[green]verified[/green]: signature and every artifact hash match")
