"""Benchmark: a container task end to end through tcworker vs a bare ``docker run --rm IMAGE true``.

Starts the local platform (``tcworker queue serve``) and one worker (``tcworker run`` with
``"engine": "docker"``) as child processes on 127.0.0.1, then alternates, ``--runs`` times each:

* **tcworker task**: ``queue.createTask`` of a docker-worker payload (image = the busybox test
  image, command ``true``) → poll ``queue.status`` until the run is resolved;
* **docker run**: ``docker run --rm tcworker-test/busybox:latest true`` as a subprocess.

One unmeasured warm-up of each comes first. Prints both medians side by side and their ratio.
Bounded: the whole run stops after ``--budget`` seconds (default 240) whatever happens.

    python bench/docker.py [--runs 10] [--budget 240]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named docker.py: drop its own directory from sys.path so `import docker` finds the SDK.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
REPO = _HERE.parent
sys.path[:0] = [str(REPO / "tests")]  # the shared test helpers: tests/helpers/

import docker  # noqa: E402
import docker.errors  # noqa: E402
import slugid  # noqa: E402
import taskcluster  # noqa: E402
from helpers.dockerimage import TEST_IMAGE, import_image  # noqa: E402
from helpers.platformproc import PlatformProcess  # noqa: E402

PROVISIONER = "bench"
POLL = 0.01


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("benchmark time budget exhausted")
        return remaining


def ensure_image() -> None:
    client = docker.from_env(timeout=60)
    try:
        client.ping()
    except docker.errors.DockerException as e:
        sys.exit(f"bench/docker.py: no Docker daemon answers ({e}); run .ci/docker-setup.sh as root")
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        import_image(client, TEST_IMAGE)
    client.close()


def start_worker(platform: PlatformProcess, workdir: Path, worker_type: str) -> subprocess.Popen[bytes]:
    key = workdir / "ed25519.key"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
    subprocess.run(
        [sys.executable, "-m", "tcworker", "new-ed25519-keypair", "--file", str(key)],
        check=True,
        capture_output=True,
        env=env,
        cwd=workdir,
    )
    config = {
        "rootURL": platform.root_url,
        "clientId": "static/taskcluster/root",
        "accessToken": platform.root_access_token,
        "provisionerId": PROVISIONER,
        "workerType": worker_type,
        "workerGroup": "bench",
        "workerId": "bench-docker",
        "engine": "docker",
        "dockerImage": TEST_IMAGE,
        "tasksDir": str(workdir / "tasks"),
        "cachesDir": str(workdir / "caches"),
        "downloadsDir": str(workdir / "downloads"),
        "ed25519SigningKeyLocation": str(key),
        "requiredDiskSpaceMegabytes": 1,
    }
    config_path = workdir / "worker.json"
    config_path.write_text(json.dumps(config))
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tcworker", "run", "--config", str(config_path)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    finally:
        log.close()


def container_task(queue: taskcluster.Queue, worker_type: str, budget: Budget) -> float:
    """Seconds from createTask to a resolved run (the run must complete)."""
    now = dt.datetime.now(dt.UTC)
    task = {
        "provisionerId": PROVISIONER,
        "workerType": worker_type,
        "created": _iso(now),
        "deadline": _iso(now + dt.timedelta(minutes=10)),
        "expires": _iso(now + dt.timedelta(days=1)),
        "retries": 0,
        "payload": {"image": TEST_IMAGE, "command": ["true"], "maxRunTime": 60},
        "metadata": {
            "name": "bench",
            "description": "bench/docker.py",
            "owner": "bench@example.com",
            "source": "https://example.com",
        },
    }
    task_id = slugid.nice()
    t0 = time.perf_counter()
    queue.createTask(task_id, task)
    while True:
        runs = queue.status(task_id)["status"]["runs"]
        if runs and runs[0]["state"] in ("completed", "failed", "exception"):
            elapsed = time.perf_counter() - t0
            if runs[0]["state"] != "completed":
                raise RuntimeError(f"bench task {task_id} resolved {runs[0]['state']}: {runs[0]}")
            return elapsed
        budget.left()
        time.sleep(POLL)


def bare_docker_run(budget: Budget) -> float:
    t0 = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", TEST_IMAGE, "true"], check=True, timeout=budget.left())
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--budget", type=float, default=240.0, help="hard limit on the whole run, seconds")
    args = parser.parse_args()
    if shutil.which("docker") is None:
        sys.exit("bench/docker.py: the docker CLI is not installed")
    budget = Budget(args.budget)
    ensure_image()
    workdir = Path(tempfile.mkdtemp(prefix="tcworker-bench-docker-"))
    worker_type = "bench-" + slugid.nice()[:10].lower().replace("_", "x").replace("-", "x")
    platform = PlatformProcess(workdir / "platform").start()
    worker = start_worker(platform, workdir, worker_type)
    tasks: list[float] = []
    bare: list[float] = []
    try:
        queue = platform.queue()
        container_task(queue, worker_type, budget)  # warm-up: worker start, image index, first claim
        bare_docker_run(budget)
        for _ in range(args.runs):
            tasks.append(container_task(queue, worker_type, budget))
            bare.append(bare_docker_run(budget))
    except TimeoutError:
        print(f"stopped by the {args.budget:.0f} s budget after {len(tasks)} runs", file=sys.stderr)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        platform.stop()
    if not tasks or not bare:
        print("no complete measurement", file=sys.stderr)
        return 1
    med_task, med_bare = statistics.median(tasks), statistics.median(bare)
    print(f"docker engine benchmark: {len(tasks)} runs each, image {TEST_IMAGE}, command `true`")
    print(f"{'':32}{'median':>10}{'min':>10}{'max':>10}")
    print(f"{'tcworker task (create→resolved)':32}{med_task:>9.3f}s{min(tasks):>9.3f}s{max(tasks):>9.3f}s")
    print(f"{'docker run --rm IMAGE true':32}{med_bare:>9.3f}s{min(bare):>9.3f}s{max(bare):>9.3f}s")
    print(f"ratio (tcworker / docker run): {med_task / med_bare:.2f}x")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
