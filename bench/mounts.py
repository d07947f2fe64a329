"""Benchmark: mounting a large tar.zst read-only directory vs ``tar --zstd -xf``; a warm cache mount.

Builds a tar.zst of about ``--size-mb`` MB (a tree of files of mixed sizes, part random and part
text, so zstd has real work to do) in a scratch directory on the same file system as the
targets, then alternates, ``--runs`` times each (one unmeasured warm-up first, page cache warm
for both):

* **tar**: ``tar --zstd -xf ARCHIVE -C DIR`` as a subprocess (the baseline);
* **tcworker read-only directory mount**: what the mounts feature does once the content is in the
  downloads store — the stored file is re-verified (sha256 hashed while it is extracted),
  extracted safely off the event loop and renamed into the target (then, unmeasured, the bytes
  extracted are checked against the archive's).

Then a **warm writable-cache mount**: a cache instance holding ``--cache-files`` files is taken
from the cache store and moved to a task directory target (and back, unmeasured), ``--runs``
times. Prints medians side by side and the ratio, for wall-clock time, CPU time (the machine may be shared) and wall-clock time
until the extracted files are written back (``os.sync()`` after each side). The order alternates
and ``os.sync()`` runs (unmeasured) before every timed run.

    python bench/mounts.py [--size-mb 500] [--runs 3] [--cache-files 10000] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import zstandard  # noqa: E402

from tcworker.caches.store import KIND_GENERIC, CacheStore  # noqa: E402
from tcworker.mounts import extract  # noqa: E402
from tcworker.mounts.downloads import DownloadStore  # noqa: E402
from tcworker.mounts.placement import place, take_back  # noqa: E402


def build_archive(path: Path, size_mb: int) -> int:
    """A tar.zst of about ``size_mb`` MB compressed; returns the uncompressed byte count."""
    text = b"".join(f"line {i} of some fairly ordinary build output text\n".encode() for i in range(20000))
    target = size_mb << 20
    sizes = [4 << 10, 64 << 10, 512 << 10, 4 << 20, 32 << 20]
    cctx = zstandard.ZstdCompressor(level=3, threads=-1)
    written = 0
    with open(path, "wb") as raw, cctx.stream_writer(raw) as zw, tarfile.open(fileobj=zw, mode="w|") as tar:
        i = 0
        while raw.tell() < target:
            size = sizes[i % len(sizes)]
            info = tarfile.TarInfo(f"tree/d{i % 97}/f{i}.bin")
            info.size = size
            # 70 % random (incompressible), 30 % text
            data = os.urandom(int(size * 0.7)) + (text * (size // len(text) + 1))[: size - int(size * 0.7)]
            tar.addfile(info, io.BytesIO(data))
            written += size
            i += 1
    return written


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def time_tar(archive: Path, dest: Path) -> tuple[float, float, float]:
    """(wall, CPU, wall until written back) seconds of ``tar --zstd -xf`` (CPU of tar and its
    zstd child)."""
    dest.mkdir()
    cpu = _cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(dest)], check=True)
    wall, used = time.perf_counter() - started, _cpu(resource.RUSAGE_CHILDREN) - cpu
    os.sync()
    return wall, used, time.perf_counter() - started


async def time_mount(
    store: DownloadStore, archive_sha: str, stored: Path, staging: Path, target: Path
) -> tuple[float, float, float]:
    """(wall, CPU, wall until written back) seconds of the read-only directory path of the
    mounts feature, from a stored download to the target (CPU of this process: all threads)."""
    cpu = _cpu(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await asyncio.to_thread(staging.mkdir, mode=0o700)
    digest = hashlib.sha256()
    await asyncio.to_thread(extract.extract, stored, "tar.zst", staging, digest)
    if digest.hexdigest() != archive_sha:
        raise SystemExit("re-verification failed")
    await asyncio.to_thread(place, staging, target)
    wall, used = time.perf_counter() - started, _cpu(resource.RUSAGE_SELF) - cpu
    await asyncio.to_thread(os.sync)
    return wall, used, time.perf_counter() - started


def unpacked_bytes(root: Path) -> int:
    """Bytes of the regular files below ``root`` (checks that a mount extracted everything)."""
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(root) for f in files)


async def warm_cache(root: Path, runs: int, files: int) -> list[float]:
    store = CacheStore(root / "caches")
    task_dir = root / "task"
    task_dir.mkdir()
    (lease,) = await store.acquire([("bench", "")], KIND_GENERIC)
    for i in range(files):
        d = lease.host_dir / f"d{i % 100}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}").write_bytes(b"x" * 100)
    await store.release([lease], returned_to={lease.instance: lease.host_dir})
    out: list[float] = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        (lease,) = await store.acquire([("bench", "")], KIND_GENERIC)
        placed = await asyncio.to_thread(place, lease.host_dir, task_dir / "cache")
        out.append(time.perf_counter() - started)
        home = store.home_of(lease.kind, lease.name, lease.instance)
        assert take_back(placed, home)
        await store.release([lease], returned_to={lease.instance: home})
    return out[1:]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-files", type=int, default=10000)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tcworker-bench-mounts-", dir=args.dir))
    try:
        archive = root / "content.tar.zst"
        t0 = time.perf_counter()
        uncompressed = build_archive(archive, args.size_mb)
        size = archive.stat().st_size
        print(
            f"archive: {size / 1e6:.0f} MB tar.zst, {uncompressed / 1e6:.0f} MB unpacked "
            f"(built in {time.perf_counter() - t0:.1f}s)"
        )
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        store = DownloadStore(root / "downloads")
        tar_times: list[tuple[float, float, float]] = []
        mount_times: list[tuple[float, float, float]] = []
        for i in range(args.runs + 1):
            order = ["tar", "mount"] if i % 2 else ["mount", "tar"]  # alternate who goes first
            for which in order:
                os.sync()  # each side starts with no dirty pages of the other pending
                if which == "tar":
                    tt = time_tar(archive, root / f"tar-{i}")
                    shutil.rmtree(root / f"tar-{i}")
                else:
                    mt = await time_mount(store, sha, archive, root / f"staging-{i}", root / f"target-{i}")
                    if (got := unpacked_bytes(root / f"target-{i}")) != uncompressed:
                        raise SystemExit(f"the mount extracted {got} bytes, the archive holds {uncompressed}")
                    shutil.rmtree(root / f"target-{i}")
            if i:  # the first round warms the page cache
                tar_times.append(tt)
                mount_times.append(mt)
        print(f"{'measurement (median of ' + str(args.runs) + ')':<44} {'tcworker':>12} {'baseline':>12}")
        for label, k in (("wall", 0), ("CPU", 1), ("wall incl. sync", 2)):
            ours = statistics.median(t[k] for t in mount_times)
            base = statistics.median(t[k] for t in tar_times)
            print(
                f"{'read-only dir mount vs tar --zstd -xf, ' + label:<44} {ours:>11.2f}s {base:>11.2f}s"
                f"   ratio {ours / base:.2f} (goal <= 1.2)"
            )
        warm = await warm_cache(root, max(args.runs, 10), args.cache_files)
        print(
            f"{'warm writable-cache mount (' + str(args.cache_files) + ' files)':<44} "
            f"{statistics.median(warm) * 1000:>10.2f}ms {'':>12}   goal <= 50 ms"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
