"""Every content kind into every mount kind, every archive and compression format, and the
payload problems that make a mounts payload malformed — platform and worker as real processes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import slugid
from helpers.mounts import COMPRESS, DATA, archive, b64, shell_checks, tar_bytes

ARCHIVE_FORMATS = [
    "tar",
    "tar.br",
    "tar.bz2",
    "tar.gz",
    "tar.lz",
    "tar.lz4",
    "tar.sz",
    "tar.xz",
    "tar.zst",
    "tar.zz",
    "zip",
    "7z",
]


def _producer_payload(dir_tgz: bytes) -> dict:
    script = (
        "import base64\n"
        "open('file.txt','w').write('artifact-file')\n"
        f"open('dir.tar.gz','wb').write(base64.b64decode('{base64.b64encode(dir_tgz).decode()}'))\n"
    )
    return {
        "command": [["python3", "-c", script]],
        "maxRunTime": 60,
        "artifacts": [
            {"type": "file", "path": "file.txt", "name": "public/file.txt"},
            {"type": "file", "path": "dir.tar.gz", "name": "public/dir.tar.gz"},
        ],
    }


def test_each_content_kind_into_each_mount_kind(start_worker, submitter, http_files) -> None:
    www, base_url = http_files
    worker = start_worker()
    namespace = f"tcworker-tests.mounts.{slugid.nice().lower().replace('_', 'x').replace('-', 'y')}"
    dir_tgz = archive("tar.gz", [("hello.txt", b"from-artifact")], Path("."))
    producer = submitter.create_task(
        {**submitter.task_definition(_producer_payload(dir_tgz)), "routes": [f"index.{namespace}"]}
    )
    assert submitter.wait_run(producer, worker=worker)["state"] == "completed"
    (www / "file.txt").write_text("url-file")
    (www / "dir.tar.gz").write_bytes(archive("tar.gz", [("hello.txt", b"from-url")], Path(".")))
    raw_tar = tar_bytes([("hello.txt", b"from-raw")]).decode("ascii")
    sources = {
        "art": (
            {"taskId": producer, "artifact": "public/file.txt"},
            {"taskId": producer, "artifact": "public/dir.tar.gz"},
            "artifact-file",
            "from-artifact",
            "tar.gz",
        ),
        "idx": (
            {"namespace": namespace, "artifact": "public/file.txt"},
            {"namespace": namespace, "artifact": "public/dir.tar.gz"},
            "artifact-file",
            "from-artifact",
            "tar.gz",
        ),
        "url": (
            {"url": f"{base_url}/file.txt"},
            {"url": f"{base_url}/dir.tar.gz"},
            "url-file",
            "from-url",
            "tar.gz",
        ),
        "raw": ({"raw": "raw-file"}, {"raw": raw_tar}, "raw-file", "from-raw", "tar"),
        "b64": (
            b64(b"b64-file"),
            b64(archive("tar.zst", [("hello.txt", b"from-b64")], Path("."))),
            "b64-file",
            "from-b64",
            "tar.zst",
        ),
    }
    mounts, checks = [], []
    for key, (file_content, dir_content, file_text, dir_text, fmt) in sources.items():
        mounts.append({"file": f"files/{key}.txt", "content": file_content})
        mounts.append({"directory": f"ro/{key}", "content": dir_content, "format": fmt})
        mounts.append(
            {
                "directory": f"caches/{key}",
                "cacheName": f"preloaded-{key}",
                "content": dir_content,
                "format": fmt,
            }
        )
        checks += [
            (f"files/{key}.txt", file_text),
            (f"ro/{key}/hello.txt", dir_text),
            (f"caches/{key}/hello.txt", dir_text),
        ]
    task = submitter.task_definition(
        {"command": shell_checks(checks), "maxRunTime": 120, "mounts": mounts},
        scopes=["generic-worker:cache:preloaded-*"],
    )
    task["dependencies"] = [producer]
    consumer = submitter.create_task(task)
    run = submitter.wait_run(consumer, worker=worker, timeout=120)
    log = submitter.log(consumer)
    assert run["state"] == "completed", log
    assert "MOUNTS-OK" in log
    assert f"Downloading artifact public/file.txt of task {producer}" in log
    assert "Preserving cache: Moving" in log


def test_every_archive_and_compression_format(start_worker, submitter, tmp_path: Path) -> None:
    worker = start_worker()
    mounts, checks = [], []
    for fmt in ARCHIVE_FORMATS:
        name = fmt.replace(".", "-")
        data = archive(fmt, [("sub/hello.txt", f"hello {fmt}".encode())], tmp_path)
        mounts.append({"directory": f"ro/{name}", "content": b64(data), "format": fmt})
        checks.append((f"ro/{name}/sub/hello.txt", f"hello {fmt}"))
    # RAR: a stored archive (read by rarfile itself) and a compressed one (through unar).
    mounts.append(
        {"directory": "ro/rar3", "content": b64((DATA / "rar3-subdirs.rar").read_bytes()), "format": "rar"}
    )
    checks.append(("ro/rar3/sub/dir1/file1.txt", "file1"))
    mounts.append(
        {"directory": "ro/rar5", "content": b64((DATA / "rar5-crc.rar").read_bytes()), "format": "rar"}
    )
    for comp, fn in COMPRESS.items():
        mounts.append(
            {"file": f"files/f.{comp}.txt", "content": b64(fn(f"file {comp}".encode())), "format": comp}
        )
        checks.append((f"files/f.{comp}.txt", f"file {comp}"))
    command = shell_checks(checks)
    command.append(
        [
            "/bin/sh",
            "-c",
            "test $(wc -c < ro/rar5/stest1.txt) -eq 2048 && cmp ro/rar5/stest1.txt ro/rar5/stest2.txt && echo RAR5-OK",
        ]
    )
    task_id = submitter.create({"command": command, "maxRunTime": 120, "mounts": mounts})
    run = submitter.wait_run(task_id, worker=worker, timeout=120)
    log = submitter.log(task_id)
    assert run["state"] == "completed", log
    assert "MOUNTS-OK" in log and "RAR5-OK" in log


def test_unsupported_format_is_malformed_payload_naming_it(start_worker, submitter) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {
            "command": [["true"]],
            "maxRunTime": 30,
            "mounts": [{"directory": "d", "content": {"raw": "x"}, "format": "tar.mz"}],
        }
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert "'tar.mz' needs a MinLZ (mz) decoder" in log


def test_missing_cache_scope_is_malformed_payload_naming_it(start_worker, submitter) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {"command": [["true"]], "maxRunTime": 30, "mounts": [{"directory": "c", "cacheName": "banana-cache"}]}
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert "generic-worker:cache:banana-cache" in log


def test_missing_dependency_is_malformed_payload_naming_it(start_worker, submitter) -> None:
    worker = start_worker()
    other = slugid.nice()
    task_id = submitter.create(
        {
            "command": [["true"]],
            "maxRunTime": 30,
            "mounts": [{"file": "f", "content": {"taskId": other, "artifact": "public/x"}}],
        }
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert f"task.dependencies needs to include {other} since one or more of its artifacts are mounted" in log
    # The worker keeps going after a malformed payload.
    ok = submitter.create({"command": [["true"]], "maxRunTime": 30})
    assert submitter.wait_run(ok, worker=worker)["state"] == "completed"


@pytest.mark.parametrize("kind", ["url"])
def test_wrong_sha256_fails_and_the_next_task_downloads_again(
    start_worker, submitter, http_files, kind
) -> None:
    www, base_url = http_files
    (www / "blob").write_bytes(b"the real content")
    worker = start_worker()
    wrong = "0" * 64
    payload = {
        "command": [["true"]],
        "maxRunTime": 30,
        "mounts": [{"file": "f", "content": {"url": f"{base_url}/blob", "sha256": wrong}}],
    }
    for _ in range(2):
        task_id = submitter.create(payload)
        run = submitter.wait_run(task_id, worker=worker)
        log = submitter.log(task_id)
        assert run["state"] == "failed", log
        assert "not retrying download" in log and f"Downloading url {base_url}/blob" in log
        assert "Reusing" not in log
    downloads = Path(worker.config["downloadsDir"])
    assert not [p for p in downloads.iterdir() if p.name.startswith("sha256-")], (
        "a mismatching download was kept"
    )
    # Right hash: stored; a stored file tampered with on disk is detected and fetched again.
    from helpers.mounts import sha256

    good = {
        **payload,
        "mounts": [
            {"file": "f", "content": {"url": f"{base_url}/blob", "sha256": sha256(b"the real content")}}
        ],
    }
    assert submitter.wait_run(submitter.create(good), worker=worker)["state"] == "completed"
    (stored,) = [p for p in downloads.iterdir() if p.name.startswith("sha256-")]
    stored.write_bytes(b"tampered")
    task_id = submitter.create({**good, "command": [["/bin/sh", "-c", "cat f"]]})
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", log
    assert "changed on disk" in log and "the real content" in log
