"""End to end (issue 14): artifact size limit and env entries no process can receive.

* ``maxArtifactSizeMegabytes`` (default 5120): a 10 GiB sparse file made with one ``truncate`` is
  refused from its size alone — an ``error`` artifact (``too-large-file-on-worker``) whose message
  names the limit, nothing uploaded, and the worker reads (far) less than the file's size; a
  required one fails the task, an optional one does not. Files under the limit upload as usual.
* Env names containing ``=`` or NUL and values containing NUL are ``malformed-payload`` with a log
  line naming each bad variable (they used to end ``failed`` when ``execve`` refused them), and
  the worker goes on to the next task.
"""

from __future__ import annotations

import psutil
import pytest
from helpers.ci import skip_or_fail
from helpers.submitter import Submitter

pytestmark = pytest.mark.timeout(180)

GIB = 1 << 30


def _read_bytes(pid: int) -> int:
    """Bytes the worker process has read through read(2) & co. so far (/proc/<pid>/io rchar)."""
    return int(psutil.Process(pid).io_counters().read_chars)


def test_a_10_gib_sparse_artifact_is_refused_by_size_without_reading_it(
    submitter: Submitter, start_worker
) -> None:
    worker = start_worker(numberOfTasksToRun=2)  # default maxArtifactSizeMegabytes
    make = (
        "truncate -s 10G big.bin && mkdir out && truncate -s 10G out/huge.bin && printf small > out/small.txt"
    )
    artifacts = [
        {"type": "file", "path": "big.bin", "name": "public/big.bin"},
        {"type": "directory", "path": "out", "name": "public/out", "optional": True},
    ]
    required = submitter.create({"command": [["sh", "-c", make]], "maxRunTime": 60, "artifacts": artifacts})
    run = submitter.wait_run(required, worker=worker)
    read_after_first = _read_bytes(worker.pid)
    assert run["state"] == "failed", (run, submitter.log(required)[-3000:])
    arts = submitter.artifacts(required, 0)
    for name in ("public/big.bin", "public/out/huge.bin"):
        art = submitter.queue.artifact(required, "0", name)
        assert art["storageType"] == "error", (name, art)
        assert art["reason"] == "too-large-file-on-worker", art
        assert "maxArtifactSizeMegabytes" in art["message"] and "5120" in art["message"], art
        assert arts[name]["storageType"] == "error"
    assert submitter.download(required, 0, "public/out/small.txt")[0] == b"small"
    log = submitter.log(required)
    assert "public/big.bin" in log and "maxArtifactSizeMegabytes" in log, log[-3000:]
    assert read_after_first < GIB, f"the worker read {read_after_first} bytes for two 10 GiB files"

    optional = submitter.create(
        {
            "command": [["sh", "-c", "truncate -s 10G big.bin"]],
            "maxRunTime": 60,
            "artifacts": [{"type": "file", "path": "big.bin", "name": "public/big.bin", "optional": True}],
        }
    )
    run = submitter.wait_run(optional, worker=worker)
    assert run["state"] == "completed", (run, submitter.log(optional)[-3000:])
    assert submitter.queue.artifact(optional, "0", "public/big.bin")["reason"] == "too-large-file-on-worker"
    assert _read_bytes(worker.pid) - read_after_first < GIB
    assert worker.wait(60) == 0


def test_max_artifact_size_megabytes_is_the_limit(submitter: Submitter, start_worker) -> None:
    worker = start_worker(maxArtifactSizeMegabytes=1)
    make = "head -c 1048576 /dev/zero > exact.bin && head -c 1048577 /dev/zero > over.bin"
    task_id = submitter.create(
        {
            "command": [["sh", "-c", make]],
            "maxRunTime": 60,
            "artifacts": [
                {"type": "file", "path": "exact.bin", "name": "public/exact.bin"},
                {"type": "file", "path": "over.bin", "name": "public/over.bin", "optional": True},
            ],
        }
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", (run, submitter.log(task_id)[-3000:])
    assert submitter.download(task_id, 0, "public/exact.bin")[0] == b"\0" * 1048576
    over = submitter.queue.artifact(task_id, "0", "public/over.bin")
    assert over["storageType"] == "error" and "1 MiB" in over["message"], over
    assert "1048577 bytes" in over["message"], over


def test_env_entries_no_process_can_receive_are_malformed(submitter: Submitter, start_worker) -> None:
    worker = start_worker(numberOfTasksToRun=5)
    bad = {
        "name-with-equals": {"E2E_A=B": "x"},
        "name-with-nul": {"E2E_NUL\u0000NAME": "x"},
        "value-with-nul": {"E2E_VALUE": "before\u0000after"},
    }
    task_ids = {
        case: submitter.create({"command": [["true"]], "maxRunTime": 30, "env": env})
        for case, env in bad.items()
    }
    several = submitter.create(
        {
            "command": [["true"]],
            "maxRunTime": 30,
            "env": {"E2E_OK": "fine", "E2E_X=1": "a", "E2E_Y": "b\u0000", "E2E_Z\u0000": "c"},
        }
    )
    good = submitter.create(
        {"command": [["sh", "-c", "echo ok-$E2E_OK"]], "maxRunTime": 30, "env": {"E2E_OK": "1"}}
    )

    expected = {
        "name-with-equals": ['"E2E_A=B"', "'='"],
        "name-with-nul": ['"E2E_NUL\\u0000NAME"', "NUL"],
        "value-with-nul": ['"E2E_VALUE"', "value", "NUL"],
    }
    for case, task_id in task_ids.items():
        run = submitter.wait_run(task_id, worker=worker)
        assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), (case, run)
        lines = [line for line in submitter.log(task_id).splitlines() if "- env" in line]
        assert lines, (case, submitter.log(task_id)[-3000:])
        assert all(fragment in lines[0] for fragment in expected[case]), (case, lines)

    run = submitter.wait_run(several, worker=worker)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), run
    lines = [line for line in submitter.log(several).splitlines() if "- env" in line]
    named = " ".join(lines)
    assert len(lines) == 3, lines
    for name in ('"E2E_X=1"', '"E2E_Y"', '"E2E_Z\\u0000"'):
        assert name in named, (name, lines)
    assert "E2E_OK" not in named

    run = submitter.wait_run(good, worker=worker)
    assert run["state"] == "completed", run
    assert "ok-1" in submitter.log(good)
    assert worker.wait(30) == 0


def _docker_daemon_or_skip() -> None:

    import docker
    import docker.errors

    try:
        docker.from_env(timeout=30).ping()
    except docker.errors.DockerException as e:
        skip_or_fail(f"no Docker daemon answers ({e}); run .ci/docker-setup.sh as root")


def test_docker_worker_payload_env_entries_are_malformed_too(submitter: Submitter, start_worker) -> None:
    """The same rule for docker-worker payloads on the docker engine (checked at admission, so
    before any container exists); a good docker task still runs afterwards."""
    _docker_daemon_or_skip()
    worker = start_worker(engine="docker", numberOfTasksToRun=2)
    image = "tcworker-test/busybox:latest"
    bad = submitter.create(
        {
            "image": image,
            "command": ["true"],
            "maxRunTime": 30,
            "env": {"E2E_D=1": "x", "E2E_DV": "a\u0000b"},
        }
    )
    good = submitter.create(
        {
            "image": image,
            "command": ["sh", "-c", "echo docker-$E2E_OK"],
            "maxRunTime": 30,
            "env": {"E2E_OK": "ok"},
        }
    )
    run = submitter.wait_run(bad, worker=worker)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), (
        run,
        submitter.log(bad)[-3000:],
    )
    lines = [line for line in submitter.log(bad).splitlines() if "- env" in line]
    assert len(lines) == 2 and '"E2E_D=1"' in lines[0] and '"E2E_DV"' in lines[1], lines
    run = submitter.wait_run(good, worker=worker)
    if run["state"] != "completed":
        log = submitter.log(good)
        if image in log and ("not found" in log or "cannot" in log):
            skip_or_fail(f"the docker test image {image} is not on this host (tests/docker builds it)")
    assert run["state"] == "completed", (run, submitter.log(good)[-3000:])
    assert "docker-ok" in submitter.log(good)
