"""The fast tar path of mount extraction gives exactly what GNU tar gives, and fails cleanly.

tar archives are read by ``tarfile`` in ``r:`` mode over ``Prefetcher`` (decoded ahead in a
thread, seekable forward only) and member data is written straight from its recycled buffers.
These tests drive that path with tiny chunks so every member straddles chunk boundaries, and
compare the result with what real ``tar`` extracts from the same archive (GNU tar also makes the
sparse and long-name archives, so the inputs are not just what Python's tarfile writes).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from helpers.ci import skip_or_fail
from helpers.mounts import COMPRESS, tar_bytes

from tcworker.mounts.extract import Budget, UnsafeArchive, extract, extract_tar
from tcworker.mounts.formats import Prefetcher, open_decompressed

SIZES = [0, 1, 511, 512, 513, 4095, 4096, 4097, 10000, 65536, 100_003]


def _gnu_tar() -> str:
    tar = shutil.which("tar")
    if tar is None or b"GNU tar" not in subprocess.run([tar, "--version"], capture_output=True).stdout:
        skip_or_fail("GNU tar is needed as the reference extractor")
    return tar


def _tree(root: Path) -> dict[str, tuple[str, object]]:
    """Every entry below ``root``: (kind, content / link target / mode) for comparison."""
    out: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", None)
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _source_tree(root: Path) -> None:
    """Files of sizes around the 512-byte block and the test's chunk size, a long name, a
    sparse file, a symlink and a hard link (all inside)."""
    (root / "d" / "e").mkdir(parents=True)
    for size in SIZES:
        (root / "d" / f"f{size}").write_bytes(os.urandom(size))
    (root / "d" / "e" / ("long-name-" * 15 + "end")).write_bytes(b"long name\n" * 300)
    with open(root / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(3 << 20)
        f.write(b"tail")
    os.symlink("d/f513", root / "link")
    os.link(root / "d" / "f4097", root / "d" / "hard")


def _gnu_tar_zst(tar: str, src: Path, archive: Path) -> None:
    plain = archive.with_suffix("")
    subprocess.run([tar, "--sparse", "--format=gnu", "-cf", str(plain), "-C", str(src), "."], check=True)
    archive.write_bytes(zstandard.ZstdCompressor(level=3).compress(plain.read_bytes()))


def test_fast_path_matches_gnu_tar_across_chunk_boundaries(tmp_path: Path) -> None:
    tar = _gnu_tar()
    src, ours, theirs = tmp_path / "src", tmp_path / "ours", tmp_path / "theirs"
    for d in (src, ours, theirs):
        d.mkdir()
    _source_tree(src)
    archive = tmp_path / "content.tar.zst"
    _gnu_tar_zst(tar, src, archive)
    subprocess.run([tar, "--zstd", "-xf", str(archive), "-C", str(theirs)], check=True)

    with open(archive, "rb") as raw:
        prefetch = Prefetcher(open_decompressed(raw, "zst"), chunk=4096, depth=2)
        try:
            extract_tar(prefetch, ours, Budget(archive.stat().st_size))  # type: ignore[arg-type]
        finally:
            prefetch.close()

    assert _tree(ours) == _tree(theirs)
    assert (ours / "sparse").stat().st_size == (3 << 20) + 4
    assert os.path.samefile(ours / "d" / "hard", ours / "d" / "f4097")


def test_inline_hash_covers_every_byte_of_the_file(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for i, size in enumerate(SIZES):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            t.addfile(info, io.BytesIO(os.urandom(size)))
    # Trailing bytes after the tar end marker (zstd frames of padding) must be hashed too.
    data = zstandard.ZstdCompressor().compress(buf.getvalue()) + zstandard.ZstdCompressor().compress(
        b"\0" * 9000
    )
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir()
    digest = hashlib.sha256()
    extract(archive, "tar.zst", dest, digest)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"f{i}" for i in range(len(SIZES)))


def test_truncated_archive_fails_and_leaves_nothing(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("big")
        info.size = 1 << 20
        t.addfile(info, io.BytesIO(os.urandom(1 << 20)))
    archive = tmp_path / "cut.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()[:300_000]))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchive, match="unexpected end of data|truncated|cannot unarchive"):
        extract(archive, "tar.zst", dest)
    assert list(dest.iterdir()) == []


def test_prefetcher_seeks_forward_only_and_stops_its_thread(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    prefetch = Prefetcher(io.BytesIO(data), chunk=1000, depth=2)
    try:
        assert prefetch.read(10) == data[:10]
        assert prefetch.seek(2500) == 2500
        assert prefetch.read(3000) == data[2500:5500]
        target = tmp_path / "part"
        with open(target, "wb") as f:
            assert prefetch.write_to(f.fileno(), 4321) == 4321
        assert target.read_bytes() == data[5500:9821]
        assert prefetch.tell() == 9821
        with pytest.raises(OSError, match="backwards"):
            prefetch.seek(100)
    finally:
        prefetch.close()
    assert not prefetch._thread.is_alive()  # gave up half-way: the reading thread still ends

    whole = Prefetcher(io.BytesIO(data), chunk=777, depth=3)
    try:
        assert whole.read() == data
        assert whole.seek(10**6) == len(data)  # skipping past the end stops at the end
    finally:
        whole.close()


@pytest.mark.parametrize("compression", sorted(COMPRESS))
def test_every_tar_compression_through_small_chunks(tmp_path: Path, compression: str) -> None:
    """Each decoder's ``readinto`` feeds the prefetcher's buffers correctly, chunk by chunk."""
    files = {f"d/f{size}": os.urandom(size) for size in SIZES}
    entries = [
        ("d", None),
        *files.items(),
        ("d/link", ("symlink", "f513")),
        ("d/hard", ("hardlink", "d/f4097")),
    ]
    packed = COMPRESS[compression](tar_bytes(entries))
    dest = tmp_path / "out"
    dest.mkdir()
    prefetch = Prefetcher(open_decompressed(io.BytesIO(packed), compression), chunk=4096, depth=2)
    try:
        extract_tar(prefetch, dest, Budget(len(packed)))  # type: ignore[arg-type]
    finally:
        prefetch.close()
    for name, data in files.items():
        assert (dest / name).read_bytes() == data, name
    assert os.readlink(dest / "d" / "link") == "f513"
    assert (dest / "d" / "hard").read_bytes() == files["d/f4097"]
