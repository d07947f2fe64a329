"""Fixtures of the taskcluster-proxy tests: a platform with a short claim timeout (so reclaims,
and with them credential swaps, happen during a task) and real ``tcworker run`` workers."""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.dockerimage import TEST_IMAGE
from helpers.engines import host_dirs
from helpers.proxy import CLAIM_TIMEOUT, ReachablePlatform
from helpers.submitter import Submitter
from helpers.taskprocs import kill_marked
from helpers.workerproc import WorkerProcess, new_signing_key, start_worker_process


def free_port_block(count: int = 8) -> int:
    """A base port with ``count`` free ports after it (the proxy uses base + 4·slot)."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 8)
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


def docker0_address() -> str | None:
    try:
        import docker

        client = docker.from_env()
        config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
        # docker0's own address: the gateway (dockerd leaves it out when it is the subnet's first host).
        return str(config.get("Gateway") or next(ipaddress.ip_network(config["Subnet"]).hosts()))
    except Exception:
        return None


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_signing_key(tmp_path_factory.mktemp("keys") / "ed25519.key")


@pytest.fixture(scope="module")
def proxy_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReachablePlatform]:
    """Listens on docker0's address when Docker is there (containers follow artifact redirects
    to it), else on 127.0.0.1; both are host-local."""
    host = docker0_address() or "127.0.0.1"
    proc = ReachablePlatform(
        tmp_path_factory.mktemp("proxy-platform") / "data", host=host, claim_timeout=CLAIM_TIMEOUT
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


WorkerFactory = Callable[..., tuple[WorkerProcess, Submitter]]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A work root whose ancestors task users can traverse (pytest's tmp_path is 0700)."""
    with host_dirs() as root:
        yield root


@pytest.fixture
def start_worker(
    scratch: Path, signing_key: Path, proxy_platform: ReachablePlatform
) -> Iterator[WorkerFactory]:
    """``start_worker(engine=..., capacity=...)``: a real worker on its own queue + a submitter."""
    made: list[tuple[WorkerProcess, Submitter]] = []
    tmp_path = scratch

    def factory(**overrides: Any) -> tuple[WorkerProcess, Submitter]:
        sub = Submitter.for_platform(proxy_platform)
        workdir = tmp_path / f"worker-{len(made)}"
        workdir.mkdir(mode=0o755)
        key = signing_key
        if overrides.get("engine") == "multiuser":
            key = new_signing_key(workdir / "ed25519.key")
            overrides.setdefault("headlessTasks", True)
        overrides.setdefault("reclaimIntervalSecs", 1)
        overrides.setdefault("taskclusterProxyPort", free_port_block())
        worker = start_worker_process(proxy_platform, workdir, key=key, workerType=sub.worker_type, **overrides)
        made.append((worker, sub))
        return worker, sub

    try:
        yield factory
    finally:
        for worker, sub in made:
            worker.stop()
            kill_marked(sub.mark)
            print(f"\n===== worker {worker.worker_id} output (tail) =====\n{worker.tail(8000)}")


@pytest.fixture(scope="module")
def image(test_image: str) -> str:
    """The busybox test image (``helpers.dockerfixtures.test_image``: skip / fail without Docker)."""
    return TEST_IMAGE
