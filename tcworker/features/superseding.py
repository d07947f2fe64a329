"""docker-worker's superseding protocol: ask a superseder service, claim the listed tasks, run one.

Contract (spec/worker.md §6): ``GET <supersederUrl>?taskId=<claimed taskId>`` answers
``{"supersedes": [taskId, …]}``. When the list contains the claimed task, the worker claims run 0
of every other listed task, runs only the **primary** — the first task in list order that it holds
a claim for — and keeps the other claims (the secondaries) alive. When the primary ran (completed
or failed), each secondary gets ``public/superseded-by.json`` = ``{"taskId", "runId"}`` of the
primary and is resolved ``exception/superseded``; the primary gets ``public/supersedes.json`` =
``[{"taskId", "runId"}, …]``. When the primary did not run to its end (exception, shutdown,
cancellation), the secondaries are resolved ``exception/worker-shutdown`` without artifacts, so the
queue retries them.

``superseded`` on a real queue: Taskcluster removed it from ``reportException`` (v40; 400). The
local platform still accepts it. On a 400 the worker writes so in the primary's task log and falls
back to ``cancelTask`` with its own credentials (the run then reads ``exception/canceled``); when
that is not allowed either (workers rarely hold ``queue:cancel-task:…``), it leaves the secondary
alone: the claim expires and the queue retries the task later. ``superseded-by.json`` is uploaded
first in every case, so the link to the primary exists whatever the queue accepts.

As a feature (``SupersedingFeature``): ``claimed`` (right after claimWork) asks the superseder and
claims the listed tasks, and returns the claim of the primary, which the worker then runs like any
other; its ``TaskFeature`` writes the plan into the primary's task log, uploads
``public/supersedes.json`` and resolves the secondaries when the primary's commands are done; the
feature's ``released`` resolves them (as not superseded) if the primary never got that far. The
secondaries' claims are kept by ``tcapi.claim.RunClaim`` and their artifacts uploaded by
``tcapi.upload.ArtifactPublisher``: the same reclaim loop and uploader as every run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import taskcluster
from yarl import URL

from tcworker import tctime
from tcworker.config import WorkerConfig
from tcworker.engines.base import TaskLogWriter
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature
from tcworker.tcapi.claim import RunClaim
from tcworker.tcapi.clients import Clients, status_code
from tcworker.tcapi.upload import ArtifactPublisher

logger = logging.getLogger(__name__)

URL_PATTERN = re.compile(r"^https?://[\x20-\x7e]*$")
TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$")
MAX_SUPERSEDES = 100  # a longer list is treated as a broken superseder (it would make us claim a queue)
MAX_RESPONSE_BYTES = 1 << 20
SUPERSEDED_BY = "public/superseded-by.json"
SUPERSEDES = "public/supersedes.json"
JSON = "application/json"

class WarnLog(Protocol):
    """The part of a task log ``fetch_supersedes`` uses."""

    def warn(self, message: str) -> None: ...


async def fetch_supersedes(
    superseder_url: str, task_id: str, *, timeout: float = 5.0, log: WarnLog | None = None
) -> list[str]:
    """The superseder's list for ``task_id``; every problem is a warning and an empty list.

    The URL must match docker-worker's ``^https?://[\\x20-\\x7e]*$``; ``taskId`` is added to its
    query. Entries that are not task ids are dropped; duplicates keep their first position.
    """

    def warn(message: str) -> list[str]:
        logger.warning("superseding: %s", message)
        if log is not None:
            log.warn(f"superseding: {message}; running this task normally")
        return []

    if not isinstance(superseder_url, str) or not URL_PATTERN.match(superseder_url):
        return warn(f"supersederUrl {superseder_url!r} is not an http(s) URL of printable ASCII")
    try:
        url = URL(superseder_url).update_query({"taskId": task_id})
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, headers={"Accept": JSON}) as resp,
        ):
            if resp.status != 200:
                return warn(f"superseder {superseder_url} answered HTTP {resp.status}")
            body = bytearray()
            while len(body) <= MAX_RESPONSE_BYTES:
                chunk = await resp.content.read(MAX_RESPONSE_BYTES + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return warn(f"superseder {superseder_url} could not be reached: {type(exc).__name__}: {exc}")
    if len(body) > MAX_RESPONSE_BYTES:
        return warn(f"superseder {superseder_url} answered more than {MAX_RESPONSE_BYTES} bytes")
    try:
        doc = json.loads(body)
    except ValueError:
        return warn(f"superseder {superseder_url} did not answer JSON")
    listed = doc.get("supersedes") if isinstance(doc, dict) else None
    if not isinstance(listed, list):
        return warn(f'superseder {superseder_url} answered without a "supersedes" list')
    if len(listed) > MAX_SUPERSEDES:
        return warn(f"superseder {superseder_url} listed {len(listed)} tasks (more than {MAX_SUPERSEDES})")
    result: list[str] = []
    for entry in listed:
        if isinstance(entry, str) and TASK_ID_PATTERN.match(entry):
            if entry not in result:
                result.append(entry)
        else:
            logger.warning("superseding: %s lists %r, which is not a taskId; ignored", superseder_url, entry)
    return result


@dataclass
class HeldClaim:
    """One run this worker holds a claim for; ``claim`` is the claimWork/claimTask answer, kept fresh
    by its ``keeper`` (the same reclaim loop every run uses)."""

    claim: dict[str, Any]
    keeper: RunClaim

    @property
    def task_id(self) -> str:
        return str(self.claim["status"]["taskId"])

    @property
    def run_id(self) -> int:
        return int(self.claim["runId"])

    @property
    def lost(self) -> bool:
        return self.keeper.lost

    @property
    def ref(self) -> dict[str, Any]:
        return {"taskId": self.task_id, "runId": self.run_id}


@dataclass
class Plan:
    """What to run: ``primary`` (a claim dict) and the secondaries it supersedes."""

    claimed_task_id: str
    primary: dict[str, Any]
    secondaries: list[HeldClaim] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lines for the primary's task log
    finished: bool = False

    @property
    def primary_task_id(self) -> str:
        return str(self.primary["status"]["taskId"])

    @property
    def primary_run_id(self) -> int:
        return int(self.primary["runId"])

    @property
    def superseding(self) -> bool:
        return bool(self.secondaries)

    def supersedes_document(self) -> bytes:
        return json.dumps([s.ref for s in self.secondaries if not s.lost]).encode()


class _NoteLog:
    """Passes superseder warnings to the task log (if any) and keeps them in ``plan.notes``."""

    def __init__(self, plan: Plan, log: WarnLog | None) -> None:
        self.plan, self.log = plan, log

    def warn(self, message: str) -> None:
        self.plan.notes.append(message)
        if self.log is not None:
            self.log.warn(message)


class Superseding:
    """Claims, reclaims and resolves the secondary runs of superseding plans (one per worker)."""

    def __init__(
        self,
        clients: Clients,
        worker_group: str,
        worker_id: str,
        *,
        task_queue_id: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.clients = clients
        self.queue = clients.queue()  # the worker's own credentials (claimTask, cancelTask)
        self.worker_group = worker_group
        self.worker_id = worker_id
        self.task_queue_id = task_queue_id
        self.timeout = timeout

    def _hold(self, answer: Mapping[str, Any]) -> HeldClaim:
        claim = dict(answer)
        keeper = RunClaim.from_claim(self.clients, claim)

        def refreshed(credentials: dict[str, str]) -> None:
            claim.update(credentials=credentials, takenUntil=tctime.to_json(keeper.taken_until))

        keeper.on_reclaimed(refreshed)
        return HeldClaim(claim, keeper)

    async def plan(self, claim: Mapping[str, Any], *, log: TaskLogWriter | None = None) -> Plan:
        """Ask the superseder named by the claimed task's payload and claim the tasks it lists."""
        claim = dict(claim)
        task_id = str(claim["status"]["taskId"])
        plan = Plan(claimed_task_id=task_id, primary=claim)
        url = (claim.get("task") or {}).get("payload", {}).get("supersederUrl")
        if not url:
            return plan

        def note(message: str) -> None:
            plan.notes.append(message)
            logger.info("superseding %s: %s", task_id, message)
            if log is not None:
                log.info(message)

        listed = await fetch_supersedes(url, task_id, timeout=self.timeout, log=_NoteLog(plan, log))
        plan.listed = listed
        if task_id not in listed:
            if listed:
                note(f"superseder {url} did not list this task; running it normally")
            return plan
        held: dict[str, HeldClaim] = {task_id: self._hold(claim)}
        for other in listed:
            if other != task_id:
                got = await self._claim(other, note)
                if got is not None:
                    held[other] = got
        order = [t for t in listed if t in held]
        plan.primary = held[order[0]].claim
        plan.secondaries = [held[t] for t in order[1:]]
        note(
            f"superseder {url} listed {len(listed)} task(s); claimed {len(order)}; running "
            f"{plan.primary_task_id} run {plan.primary_run_id}"
            + (
                f", superseding {', '.join(f'{s.task_id}/{s.run_id}' for s in plan.secondaries)}"
                if plan.superseding
                else ""
            )
        )
        for sec in plan.secondaries:
            sec.keeper.start()
        return plan

    async def _claim(self, task_id: str, note: Callable[[str], None]) -> HeldClaim | None:
        try:
            answer = await self.queue.claimTask(
                task_id, "0", {"workerGroup": self.worker_group, "workerId": self.worker_id}
            )
        except Exception as exc:
            note(f"could not claim {task_id} run 0 ({_why(exc)}); not superseding it")
            return None
        held = self._hold(answer)
        task = held.claim.get("task") or {}
        queue_id = task.get("taskQueueId") or f"{task.get('provisionerId')}/{task.get('workerType')}"
        if self.task_queue_id is not None and queue_id != self.task_queue_id:
            note(
                f"{task_id} belongs to task queue {queue_id}, not {self.task_queue_id}; giving it back (worker-shutdown)"
            )
            with contextlib.suppress(Exception):
                await held.keeper.queue.reportException(task_id, "0", {"reason": "worker-shutdown"})
            return None
        return held

    async def finish(self, plan: Plan, primary_ok: bool, *, log: TaskLogWriter | None = None) -> None:
        """Resolve every secondary (see the module docstring). Idempotent; never raises for one secondary."""
        if plan.finished:
            return
        plan.finished = True
        for sec in plan.secondaries:
            await sec.keeper.stop()
        for sec in plan.secondaries:
            if sec.lost:
                continue
            try:
                if primary_ok:
                    await self._supersede(plan, sec, log)
                else:
                    await self._report(sec, "worker-shutdown")
            except Exception as exc:
                message = f"could not resolve superseded task {sec.task_id}/{sec.run_id}: {_why(exc)}"
                logger.warning("superseding: %s", message)
                if log is not None:
                    log.warn(message)

    async def _report(self, sec: HeldClaim, reason: str) -> None:
        try:
            await sec.keeper.queue.reportException(sec.task_id, str(sec.run_id), {"reason": reason})
        except Exception as exc:
            if status_code(exc) != 409:
                raise
            logger.info("superseding: %s/%s was already resolved (409)", sec.task_id, sec.run_id)

    async def _supersede(self, plan: Plan, sec: HeldClaim, log: TaskLogWriter | None) -> None:
        def say(message: str, warn: bool = False) -> None:
            (logger.warning if warn else logger.info)("superseding: %s", message)
            if log is not None:
                (log.warn if warn else log.info)(message)

        body = json.dumps({"taskId": plan.primary_task_id, "runId": plan.primary_run_id}).encode()
        expires = (sec.claim.get("task") or {}).get("expires") or taskcluster.fromNowJSON("1 day")
        publisher = ArtifactPublisher(self.clients, lambda: sec.keeper.queue, sec.task_id, sec.run_id)
        try:
            await publisher.upload_bytes(SUPERSEDED_BY, body, JSON, expires)
        except Exception as exc:
            say(f"could not upload {SUPERSEDED_BY} to {sec.task_id}/{sec.run_id}: {_why(exc)}", warn=True)
        try:
            await self._report(sec, "superseded")
            say(f"resolved {sec.task_id}/{sec.run_id} exception/superseded")
            return
        except Exception as exc:
            if status_code(exc) != 400:
                raise
        say(
            f"the queue at {self.clients.root_url} no longer accepts exception reason 'superseded' "
            f"(removed in Taskcluster v40); cancelling superseded task {sec.task_id} instead",
            warn=True,
        )
        try:
            await self.queue.cancelTask(sec.task_id)
            say(f"cancelled superseded task {sec.task_id} (its run reads exception/canceled)")
        except Exception as exc:
            say(
                f"could not cancel {sec.task_id} either ({_why(exc)}); its claim on run {sec.run_id} will "
                "expire and the queue will retry it",
                warn=True,
            )


def _key(claim: Mapping[str, Any]) -> str:
    return f"{claim['status']['taskId']}/{int(claim['runId'])}"


class SupersedingFeature(Feature):
    """docker-worker's ``supersederUrl`` as a feature (see the module docstring)."""

    name = "superseding"

    def __init__(self) -> None:
        self._superseding: Superseding | None = None
        self._plans: dict[str, Plan] = {}

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        if config.engine == "docker":
            self._superseding = Superseding(
                clients, config.workerGroup, config.workerId, task_queue_id=config.task_queue_id
            )

    async def claimed(self, claim: dict[str, Any]) -> dict[str, Any]:
        payload = (claim.get("task") or {}).get("payload") or {}
        if self._superseding is None or not (
            isinstance(payload, dict) and "image" in payload and payload.get("supersederUrl")
        ):
            return claim
        try:
            plan = await self._superseding.plan(claim)
        except Exception:
            logger.exception("superseding lookup for %s failed; running it normally", _key(claim))
            return claim
        self._plans[_key(plan.primary)] = plan
        return plan.primary

    async def released(self, claim: dict[str, Any], resolution: tuple[str, str | None]) -> None:
        plan = self._plans.pop(_key(claim), None)
        if plan is not None and self._superseding is not None:
            await self._superseding.finish(plan, resolution[0] in ("completed", "failed"))

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        plan = self._plans.get(f"{run.task_id}/{run.run_id}")
        if plan is None or self._superseding is None:
            return None
        return _SupersedingRun(self._superseding, plan, run)


class _SupersedingRun(TaskFeature):
    def __init__(self, superseding: Superseding, plan: Plan, run: RunHandle) -> None:
        self.superseding = superseding
        self.plan = plan
        self.run = run

    def reserved_artifacts(self) -> list[str]:
        return [SUPERSEDES]

    async def start(self) -> None:
        for note in self.plan.notes:
            self.run.log.info(note)

    async def stop(self, outcome: RunOutcome) -> None:
        """Publish ``supersedes.json``, then resolve the secondaries while the log is still open."""
        if self.plan.superseding:
            await self.run.publisher.upload_bytes(
                SUPERSEDES, self.plan.supersedes_document(), JSON, self.run.task["expires"]
            )
        ran = outcome.commands_started and outcome.resolution()[0] in ("completed", "failed")
        await self.superseding.finish(self.plan, ran, log=self.run.log)


def _why(exc: BaseException) -> str:
    """One line about an error, without the request details the client appends."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
