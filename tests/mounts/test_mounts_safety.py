"""Hostile archives are refused (the task fails) with nothing written outside the destination."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import slugid
import zstandard
from helpers.mounts import DATA, b64, tar_bytes, zero_stream_tar_zst


def _zip_escape(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), b"escaped")
    return buf.getvalue()


def _tar_device() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("null")
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
        tar.addfile(info)
    return buf.getvalue()


def test_hostile_archives_are_refused_and_write_nothing_outside(
    start_worker, submitter, tmp_path: Path
) -> None:
    worker = start_worker()
    token = "escaped-" + slugid.nice().replace("-", "x")
    outside = tmp_path / token  # where a ../ or absolute entry would land
    cases = {
        "dotdot": ("tar", tar_bytes([(f"../../../../../../../../../..{outside}", b"x")])),
        "dotdot-simple": ("tar", tar_bytes([(f"../{token}", b"x")])),
        "absolute": ("tar", tar_bytes([(str(outside), b"x")])),
        "symlink-out": ("tar", tar_bytes([("link", ("symlink", str(tmp_path))), (f"link/{token}", b"x")])),
        "symlink-rel-out": (
            "tar",
            tar_bytes([("link", ("symlink", "../../../../../../../../..")), (f"link{outside}", b"x")]),
        ),
        "hardlink-out": ("tar", tar_bytes([("passwd", ("hardlink", "/etc/passwd"))])),
        "hardlink-dotdot": (
            "tar",
            tar_bytes([("passwd", ("hardlink", "../../../../../../../../etc/passwd"))]),
        ),
        "device": ("tar", _tar_device()),
        "zip-dotdot": ("zip", _zip_escape(f"../../{token}")),
        "zip-absolute": ("zip", _zip_escape(str(outside))),
        "rar-symlink": ("rar", (DATA / "rar5-evil-symlink-traversal.rar").read_bytes()),
        "bomb": ("tar.zst", zero_stream_tar_zst(300 << 20)),
    }
    for label, (fmt, data) in cases.items():
        task_id = submitter.create(
            {
                "command": [["/bin/sh", "-c", "echo SHOULD-NOT-RUN"]],
                "maxRunTime": 60,
                "mounts": [{"directory": "d", "content": b64(data), "format": fmt}],
            }
        )
        run = submitter.wait_run(task_id, worker=worker, timeout=90)
        log = submitter.log(task_id)
        assert run["state"] == "failed", f"{label}: {log}"
        assert "SHOULD-NOT-RUN\n" not in log.replace('"echo SHOULD-NOT-RUN"', ""), label
        if label == "bomb":
            assert "decompression bomb" in log, log
    # A compressed file mount that expands without bound fails the same way.
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(300 << 20))
    task_id = submitter.create(
        {
            "command": [["true"]],
            "maxRunTime": 60,
            "mounts": [{"file": "f", "content": b64(bomb), "format": "zst"}],
        }
    )
    assert submitter.wait_run(task_id, worker=worker, timeout=90)["state"] == "failed"
    assert "decompression bomb" in submitter.log(task_id)
    found = [
        os.path.join(d, n)
        for root in (tmp_path, Path("/tmp"), Path(worker.config["tasksDir"]).parent)
        for d, dirs, files in os.walk(root)
        for n in dirs + files
        if token in n
    ]
    assert not found, f"written outside the destination: {found}"
    # The worker is still healthy.
    ok = submitter.create({"command": [["true"]], "maxRunTime": 30})
    assert submitter.wait_run(ok, worker=worker)["state"] == "completed"
