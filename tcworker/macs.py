"""HMAC-SHA256 and random bytes for every request signed or checked, without letting go of the GIL.

Why this exists (issue 15): ``hmac.digest`` (OpenSSL's one-shot HMAC) and ``os.urandom`` release
the GIL on every call, however small the input. The platform's database thread is nearly always
waiting for the GIL under load, so each such call hands it over and the event loop then waits to
get it back (up to the switch interval) and pays the thread switches: measured in the server at
~25 us per ``hmac.digest`` against ~2 us alone, about seven calls per task. ``hmac.new`` objects
(the standard library's, backed by OpenSSL) keep the GIL for inputs under 2 KiB; the keyed object
is built once per key and copied for each message, which also skips the key set-up. Random
bytes are read from the OS in blocks and handed out without reuse (``random_bytes``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

#: Keys whose HMAC object is kept. Temporary credentials bring a new key each (a run's key is
#: used for all of that run's calls); the cache is emptied when it reaches this size.
KEY_CACHE_SIZE = 2048
#: Random bytes read from the OS at a time (one GIL release per block instead of per seed).
RANDOM_BLOCK = 4096

_keyed: dict[bytes, hmac.HMAC] = {}


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """``hmac.digest(key, message, "sha256")``, computed without releasing the GIL for small messages."""
    base = _keyed.get(key)
    if base is None:
        if len(_keyed) >= KEY_CACHE_SIZE:
            _keyed.clear()
        base = _keyed[key] = hmac.new(key, digestmod=hashlib.sha256)
    mac = base.copy()
    mac.update(message)
    return mac.digest()


class _RandomBlocks:
    """``os.urandom`` read a block at a time; every byte is handed out once."""

    def __init__(self) -> None:
        self._block = b""
        self._used = 0
        self._lock = threading.Lock()  # the loop thread issues credentials; keep any other caller safe

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._used + size > len(self._block):
                self._block = os.urandom(max(RANDOM_BLOCK, size))
                self._used = 0
            start, self._used = self._used, self._used + size
            return self._block[start : self._used]


_random = _RandomBlocks()
_pid = os.getpid()


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the OS's cryptographic random source (``os.urandom``), never reused.

    After a fork the child starts a new block: the parent's unused bytes must not be shared.
    """
    global _random, _pid
    if os.getpid() != _pid:
        _random, _pid = _RandomBlocks(), os.getpid()
    return _random.take(size)
