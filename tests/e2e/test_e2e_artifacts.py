"""End to end: payload artifacts of every kind, read back with the official client.

file and directory artifacts, default names, content types guessed by extension, content
encodings (gzip unless the extension is already compressed), default expiry, optional and
required missing artifacts (an `error` artifact either way), and paths or symlinks that leave the
task directory (refused with an `error` artifact, never uploaded). spec/worker.md §2.3, §7 13-16.
"""

from __future__ import annotations

import pytest
from helpers.submitter import Submitter, decoded, parse_iso

pytestmark = pytest.mark.timeout(120)

MAKE_FILES = " && ".join(
    [
        "mkdir -p out outdir/sub public",
        "printf 'hello text\\n' > out/a.txt",
        "yes jpegdata | head -c 4096 > img.jpg",
        "printf plain > public/plain.txt",
        "printf custom > custom.dat",
        "printf '{\"k\": 1}' > outdir/c.json",
        "printf nested > outdir/sub/b.bin",
        "mkdir escdir",
        "printf inside > escdir/inside.txt",
        "ln -s /etc/passwd escdir/escape-link",
        "ln -s /etc escdir/etc-dir-link",
        "ln -s /etc/passwd leak.txt",
    ]
)

ARTIFACTS = [
    {"type": "file", "path": "out/a.txt", "name": "public/a.txt"},
    {"type": "file", "path": "img.jpg", "name": "public/img.jpg"},
    {"type": "file", "path": "public/plain.txt"},
    {"type": "file", "path": "custom.dat", "name": "public/custom.dat", "contentType": "application/x-e2e"},
    {"type": "directory", "path": "outdir", "name": "public/dir"},
    {"type": "directory", "path": "escdir", "name": "public/escdir", "optional": True},
    {"type": "file", "path": "missing.txt", "name": "public/opt-missing.txt", "optional": True},
    {"type": "directory", "path": "missing-dir", "name": "public/opt-missing-dir", "optional": True},
    {"type": "file", "path": "outdir", "name": "public/file-is-dir", "optional": True},
    {"type": "file", "path": "leak.txt", "name": "public/leak.txt", "optional": True},
    {"type": "file", "path": "../../../../../../../../etc/passwd", "name": "public/dotdot", "optional": True},
]


def _error(sub: Submitter, task_id: str, name: str) -> dict[str, str]:
    art = sub.queue.artifact(task_id, "0", name)
    assert art["storageType"] == "error", f"{name} should be an error artifact, got {art}"
    return dict(art)


def test_artifacts_of_every_kind(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {"command": [["sh", "-c", MAKE_FILES]], "maxRunTime": 60, "artifacts": ARTIFACTS}
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", (
        f"only optional artifacts are missing, so completed: {run}{submitter.explain(task_id)}"
    )
    arts = submitter.artifacts(task_id, 0)

    assert submitter.download(task_id, 0, "public/a.txt")[0] == b"hello text\n"
    assert arts["public/a.txt"]["contentType"] == "text/plain; charset=utf-8"
    assert submitter.download(task_id, 0, "public/img.jpg")[0] == (b"jpegdata\n" * 456)[:4096]
    assert arts["public/img.jpg"]["contentType"] == "image/jpeg"
    assert submitter.download(task_id, 0, "public/plain.txt")[0] == b"plain", "name defaults to the path"
    assert arts["public/custom.dat"]["contentType"] == "application/x-e2e", "explicit contentType wins"

    assert submitter.download(task_id, 0, "public/dir/c.json")[0] == b'{"k": 1}'
    assert arts["public/dir/c.json"]["contentType"] == "application/json"
    assert submitter.download(task_id, 0, "public/dir/sub/b.bin")[0] == b"nested"
    assert arts["public/dir/sub/b.bin"]["contentType"] == "application/octet-stream"

    # Nothing outside the task directory is ever uploaded as data: the escaping entries of
    # public/escdir (or the whole directory artifact) become error artifacts.
    passwd = open("/etc/passwd", "rb").read()
    for name, art in arts.items():
        if art["storageType"] != "error" and name.startswith(
            ("public/escdir", "public/leak", "public/dotdot")
        ):
            assert submitter.download(task_id, 0, name)[0] != passwd, f"{name}: /etc/passwd was uploaded"
            assert name == "public/escdir/inside.txt", f"{name} escaped the task dir and was uploaded: {art}"
    assert not any(n.startswith("public/escdir/etc-dir-link/") for n in arts), (
        "a directory symlink was followed"
    )
    assert any(n.startswith("public/escdir") and a["storageType"] == "error" for n, a in arts.items()), (
        f"the escaping symlink produced no error artifact: {sorted(arts)}"
    )
    for name in ("public/leak.txt", "public/dotdot"):
        _error(submitter, task_id, name)

    missing = _error(submitter, task_id, "public/opt-missing.txt")
    assert missing["reason"] == "file-missing-on-worker"
    assert "Could not read file" in missing["message"] and "missing.txt" in missing["message"]
    assert _error(submitter, task_id, "public/opt-missing-dir")["reason"] == "file-missing-on-worker"
    assert _error(submitter, task_id, "public/file-is-dir")["reason"] == "invalid-resource-on-worker"

    task_expires = parse_iso(submitter.queue.task(task_id)["expires"])
    for name in ("public/a.txt", "public/dir/c.json"):
        assert parse_iso(arts[name]["expires"]) == task_expires, f"{name}: default expiry is the task's"


def test_missing_required_artifact_fails_the_task_with_an_error_artifact(
    submitter: Submitter, start_worker
) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {
            "command": [["sh", "-c", "echo present > here.txt"]],
            "maxRunTime": 60,
            "artifacts": [
                {"type": "file", "path": "here.txt", "name": "public/here.txt"},
                {"type": "file", "path": "not-there.txt", "name": "public/not-there.txt"},
            ],
        }
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "failed", run
    err = _error(submitter, task_id, "public/not-there.txt")
    assert err["reason"] == "file-missing-on-worker"
    assert submitter.download(task_id, 0, "public/here.txt")[0] == b"present\n"


def test_symlink_escaping_the_task_dir_fails_a_required_artifact(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {
            "command": [["ln", "-s", "/etc/passwd", "secret.txt"]],
            "maxRunTime": 60,
            "artifacts": [{"type": "file", "path": "secret.txt", "name": "public/secret.txt"}],
        }
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "failed", run
    _error(submitter, task_id, "public/secret.txt")


def test_content_encoding_defaults_and_explicit_values(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {
            "command": [
                ["sh", "-c", "yes text-line | head -c 20000 > big.txt; yes jpegdata | head -c 4096 > img.jpg"]
            ],
            "maxRunTime": 60,
            "artifacts": [
                {"type": "file", "path": "big.txt", "name": "public/big.txt"},
                {"type": "file", "path": "img.jpg", "name": "public/img.jpg"},
                {
                    "type": "file",
                    "path": "big.txt",
                    "name": "public/identity.txt",
                    "contentEncoding": "identity",
                },
                {"type": "file", "path": "img.jpg", "name": "public/gzip.jpg", "contentEncoding": "gzip"},
            ],
        }
    )
    assert submitter.wait_run(task_id, worker=worker)["state"] == "completed"
    text = (b"text-line\n" * 2000)[:20000]
    jpeg = (b"jpegdata\n" * 456)[:4096]
    expected = {
        "public/big.txt": ("gzip", text),
        "public/img.jpg": ("identity", jpeg),
        "public/identity.txt": ("identity", text),
        "public/gzip.jpg": ("gzip", jpeg),
    }
    for name, (encoding, content) in expected.items():
        got_encoding, raw = submitter.raw_artifact(task_id, 0, name)
        assert got_encoding == encoding, (
            f"{name}: served with Content-Encoding {got_encoding}, want {encoding}"
        )
        assert decoded(got_encoding, raw) == content, name
        assert submitter.download(task_id, 0, name)[0] == content, f"{name}: client download differs"
    log_encoding, _ = submitter.raw_artifact(task_id, 0, "public/logs/live_backing.log")
    assert log_encoding == "gzip", "the backing log is published gzip-encoded (issue 3)"


def test_artifact_conflicts_and_duplicates(submitter: Submitter, start_worker) -> None:
    """spec §7 case 16: two files under one name and an entry listed twice are malformed; a file
    published both directly and through its directory is fine (identical re-post)."""
    worker = start_worker(numberOfTasksToRun=3)
    make = "mkdir -p d && echo one > d/one.txt && echo two > two.txt"
    conflicting = submitter.create(
        {
            "command": [["sh", "-c", make]],
            "maxRunTime": 60,
            "artifacts": [
                {"type": "file", "path": "d/one.txt", "name": "public/same.txt"},
                {"type": "file", "path": "two.txt", "name": "public/same.txt"},
            ],
        }
    )
    twice = submitter.create(
        {
            "command": [["sh", "-c", make]],
            "maxRunTime": 60,
            "artifacts": [{"type": "file", "path": "two.txt", "name": "public/two.txt"}] * 2,
        }
    )
    overlap = submitter.create(
        {
            "command": [["sh", "-c", make]],
            "maxRunTime": 60,
            "artifacts": [
                {"type": "directory", "path": "d", "name": "public/d"},
                {"type": "file", "path": "d/one.txt", "name": "public/d/one.txt"},
            ],
        }
    )
    for task_id in (conflicting, twice):
        run = submitter.wait_run(task_id, worker=worker)
        assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), (
            f"{run}{submitter.explain(task_id)}"
        )
    run = submitter.wait_run(overlap, worker=worker)
    assert run["state"] == "completed", f"{run}{submitter.explain(overlap)}"
    assert submitter.download(overlap, 0, "public/d/one.txt")[0] == b"one\n"
    assert worker.wait(30) == 0


def test_payload_artifact_cannot_replace_the_task_log(submitter: Submitter, start_worker) -> None:
    """spec §2.3 / §7 case 19: a payload artifact named like the backing log is skipped with a warning."""
    worker = start_worker()
    task_id = submitter.create(
        {
            "command": [["sh", "-c", "echo FORGED-LOG > fake.log; echo real-task-output"]],
            "maxRunTime": 60,
            "artifacts": [{"type": "file", "path": "fake.log", "name": "public/logs/live_backing.log"}],
        }
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", f"{run}{submitter.explain(task_id)}"
    log = submitter.log(task_id)
    assert "real-task-output" in log
    assert "FORGED-LOG" not in log.replace("echo FORGED-LOG", ""), (
        "the payload artifact replaced the task log"
    )


def test_live_log_feature_disabled_publishes_only_the_backing_log(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {"command": [["echo", "no-live"]], "maxRunTime": 60, "features": {"liveLog": False}}
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", f"{run}{submitter.explain(task_id)}"
    arts = submitter.artifacts(task_id, 0)
    assert "public/logs/live_backing.log" in arts
    assert "public/logs/live.log" not in arts, sorted(arts)
