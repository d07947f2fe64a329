"""A small ext4 file system on a loop device, with or without a journal (root, ``mkfs.ext4``)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from helpers.ci import require_root, require_tool, skip_or_fail


@contextlib.contextmanager
def loop_ext4(base: Path, *, journal: bool, size_mb: int = 64) -> Iterator[Path]:
    """Mount a fresh ext4 made in a file under ``base``; yields its mount point (mode 0755).
    Unmounted afterwards (lazily when something still holds it), which frees the loop device."""
    require_root("mounting a loop file system")
    mkfs = require_tool("mkfs.ext4", "e2fsprogs")
    name = "journal" if journal else "nojournal"
    image = base / f"{name}.img"
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    features = [] if journal else ["-O", "^has_journal"]
    subprocess.run([mkfs, "-q", "-F", *features, str(image)], check=True, capture_output=True)
    mount_point = base / name
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a loop file system here: {mounted.stderr.strip()}")
    try:
        mount_point.chmod(0o755)
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
