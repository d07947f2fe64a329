"""The docker tests' images, built locally because no registry is reachable in CI.

A root file system made of Debian's ``busybox-static`` (``/bin/busybox`` plus one relative symlink
per applet) is tarred in memory and ``docker import``-ed as ``TEST_IMAGE`` (or any other name, with
extra files and Dockerfile-style changes). The docker engine runs generic-worker payloads in the
config's ``dockerImage``, so the same image serves both payload kinds.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path

import docker

TEST_IMAGE = "tcworker-test/busybox:latest"
BUSYBOX = "/bin/busybox"


def busybox_path() -> str | None:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def rootfs_tar(extra_files: Mapping[str, bytes] | None = None) -> bytes:
    """A minimal root file system: busybox applets in /bin, /etc/passwd, /tmp, /root, /home."""
    busybox = busybox_path()
    if busybox is None:
        raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, mode in [("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700), ("home", 0o755)]:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tf.addfile(info)
        for name in ("dev", "proc", "sys", "usr", "usr/bin"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        tf.add(busybox, "bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tf.addfile(info)
        files = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"}
        files.update(extra_files or {})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def import_image(
    client: docker.DockerClient,
    name: str,
    *,
    extra_files: Mapping[str, bytes] | None = None,
    changes: list[str] | None = None,
) -> str:
    """``docker import`` a busybox root file system as ``name`` (``repo:tag``); returns the image id."""
    repo, _, tag = name.rpartition(":")
    client.api.import_image_from_data(
        rootfs_tar(extra_files),
        repository=repo,
        tag=tag,
        changes=["ENV PATH=/bin:/usr/bin", 'CMD ["/bin/sh"]', *(changes or [])],
    )
    return str(client.images.get(name).id)
