"""Masking secrets in the task log: every value and the encoded forms a task may print it in.

One masker sits in the task log (``TaskLog.add_secrets``), before the bytes reach the disk, so the
backing log, the live log and ``tcworker local``'s terminal all see the same masked stream. The
worker core feeds it the worker's and the run's credentials (again after every reclaim), the
docker engine the decrypted ``encryptedEnv`` values, later features their own (the proxy's).

A task can print a secret as it is, URL-encoded (``curl --data-urlencode``) or base64-encoded
(``echo -n "$TOKEN" | base64``). For base64 the masked strings are the characters that depend on
the secret's bytes alone, at each of the three alignments a secret can have inside a base64
stream, so the secret is masked whether it was encoded on its own or inside a bigger blob (the
one or two edge characters that mix in neighbouring bytes stay visible; they carry at most a few
bits). Line-wrapped base64 (``base64`` without ``-w0`` for values over 57 bytes) is not recognised.

Matching is one Aho-Corasick automaton (``ahocorasick_rs``, Rust, ~10 GB/s: a regular-expression
alternation of the same strings ran at 30–120 MiB/s, slower than the log itself), and ``feed`` holds back only a tail
that could still grow into a secret, so ordinary output is not delayed. The automaton is built
only once a log has passed ``FIND_BUDGET`` bytes or ``FIND_MATCHES`` matches: building it for a
run's credentials (~16 strings) took 0.05 ms in a loop and ~0.2 ms inside a busy worker, per
task, while most tasks' whole log is a few KiB, which ``bytes.find`` per string scans faster
than that — with the same leftmost-longest result (``_find_spans``).
"""

from __future__ import annotations

import base64
import bisect
import functools
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

import ahocorasick_rs

MASK = b"[secret]"
# Shorter values are not masked: replacing every "1" or "on" in a log would destroy it and hide little.
MIN_MASKED_LENGTH = 4
# Encoded forms shorter than this are left out (a 4-character base64 run matches too much text).
MIN_ENCODED_LENGTH = 8
# Scanned with ``bytes.find`` per secret until this many bytes or matches; the automaton after.
FIND_BUDGET = 256 * 1024
FIND_MATCHES = 256


def candidate_values(values: Iterable[str]) -> list[str]:
    """Each value and each line of a multi-line value, when long enough to be worth masking."""
    found: set[str] = set()
    for value in values:
        for candidate in (value, *value.splitlines()):
            candidate = candidate.strip("\r\n")
            if len(candidate) >= MIN_MASKED_LENGTH:
                found.add(candidate)
    return sorted(found, key=lambda v: (-len(v), v))


def base64_cores(raw: bytes) -> set[bytes]:
    """The base64 characters determined by ``raw`` alone, for each alignment in a stream."""
    out: set[bytes] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            encoded = encode(b"\0" * shift + raw)
            start = -(-8 * shift // 6)  # first character without prefix bits
            end = (8 * (shift + len(raw))) // 6  # last character without bits after the secret
            core = encoded[start:end]
            if len(core) >= MIN_ENCODED_LENGTH:
                out.add(core)
    return out


@functools.lru_cache(maxsize=32)
def secret_forms(value: str) -> frozenset[bytes]:
    """``value`` as bytes plus its URL-encoded and base64 forms. Remembered: every run masks
    the worker's own credentials again, and their forms are a quarter of building a masker
    (a small cache: the worker's values stay, finished runs' temporary ones soon drop out)."""
    raw = value.encode("utf-8", "replace")
    forms = {raw}
    for encoded in (quote(value, safe=""), quote_plus(value), quote(value, safe="/")):
        if len(encoded) >= MIN_ENCODED_LENGTH:
            forms.add(encoded.encode("ascii"))
    forms |= base64_cores(raw)
    return frozenset(forms)


class SecretMasker:
    """Replace secret values in log bytes with ``[secret]``, also across chunk boundaries.

    ``mask`` treats one complete buffer. For a stream, pass each chunk to ``feed`` and write what it
    returns; it holds back only a tail that could still grow into a secret, and ``flush`` releases
    that tail at the end. ``encoded=True`` also masks the URL-encoded and base64 forms.
    Matching is leftmost-longest, so overlapping secrets mask the longest span.
    """

    def __init__(
        self, values: Iterable[str] = (), replacement: bytes = MASK, *, encoded: bool = False
    ) -> None:
        self._replacement = replacement
        self._encoded = encoded
        self._secrets: set[bytes] = set()
        self._automaton: ahocorasick_rs.BytesAhoCorasick | None = None
        self._sorted: list[bytes] = []  # for "is this tail the start of a secret" by bisection
        self._first_bytes: frozenset[int] = frozenset()
        self._alphabet = b""  # every byte that occurs in some secret
        self._longest = 0
        self._pending = b""
        self._find_budget = FIND_BUDGET  # bytes left to scan with ``bytes.find`` (< 0: automaton)
        self._find_matches = FIND_MATCHES
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Register more values (short ones are ignored, see ``MIN_MASKED_LENGTH``)."""
        new: set[bytes] = set()
        for value in candidate_values(values):
            new |= secret_forms(value) if self._encoded else {value.encode("utf-8", "replace")}
        new -= self._secrets
        if not new:
            return
        self._secrets |= new
        self._sorted = sorted(self._secrets)
        self._automaton = None  # rebuilt with the new values when next needed
        self._alphabet = bytes(set(b"".join(self._secrets)))
        self._first_bytes = frozenset(s[0] for s in self._secrets)
        self._longest = max(map(len, self._secrets))

    def __bool__(self) -> bool:
        return bool(self._sorted)

    def _spans(self, data: bytes) -> Iterator[tuple[int, int]]:
        """The (start, end) of each match in ``data``, leftmost-longest, not overlapping."""
        if self._automaton is None and self._find_budget >= len(data):
            self._find_budget -= len(data)
            yield from self._find_spans(data)
            return
        self._find_budget = -1
        yield from self._automaton_spans(data, 0)

    def _automaton_spans(self, data: bytes, offset: int) -> Iterator[tuple[int, int]]:
        if self._automaton is None:
            # A contiguous NFA builds in ~0.05 ms (the default DFA took ~10 ms).
            self._automaton = ahocorasick_rs.BytesAhoCorasick(
                self._sorted,
                matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST,
                implementation=ahocorasick_rs.Implementation.ContiguousNFA,
            )
        view = data[offset:] if offset else data
        for _, start, end in self._automaton.find_matches_as_indexes(view):
            yield start + offset, end + offset

    def _find_spans(self, data: bytes) -> Iterator[tuple[int, int]]:
        """What the automaton finds, by ``bytes.find`` per secret: at each step the earliest
        next occurrence, the longest of those starting there; each secret's next occurrence is
        searched again only once the scan has passed it. Past ``FIND_MATCHES`` matches (a log
        full of secrets: each match costs a pass over the secrets) the automaton goes on."""
        secrets = self._sorted
        nexts = [data.find(s) for s in secrets]
        pos = 0
        while True:
            best_start = best_end = -1
            for k, found in enumerate(nexts):
                if found < pos:
                    if found < 0:
                        continue
                    found = nexts[k] = data.find(secrets[k], pos)
                    if found < 0:
                        continue
                end = found + len(secrets[k])
                if best_start < 0 or found < best_start or (found == best_start and end > best_end):
                    best_start, best_end = found, end
            if best_start < 0:
                return
            yield best_start, best_end
            pos = best_end
            self._find_matches -= 1
            if self._find_matches <= 0:
                self._find_budget = -1
                yield from self._automaton_spans(data, pos)
                return

    def _replace(self, data: bytes, spans: Iterable[tuple[int, int]]) -> bytes:
        out: list[bytes] = []
        pos = 0
        for start, end in spans:
            out += (data[pos:start], self._replacement)
            pos = end
        if not out:
            return data
        out.append(data[pos:])
        return b"".join(out)

    def mask(self, data: bytes) -> bytes:
        if not self._sorted or not data:
            return data
        return self._replace(data, self._spans(data))

    def _hold_point(self, data: bytes) -> int:
        """The first position whose rest could still grow into a secret (``len(data)`` if none)."""
        firsts, ordered = self._first_bytes, self._sorted
        window = max(0, len(data) - self._longest + 1)
        # A tail that can grow into a secret holds only bytes of secrets: start after the last
        # other byte (found in C by rstrip; a log line's "\n" usually ends the search at once).
        start = window + len(data[window:].rstrip(self._alphabet))
        for p in range(start, len(data)):
            if data[p] in firsts:
                tail = data[p:]
                # The first secret longer than and >= tail starts with it, if any does.
                i = bisect.bisect_right(ordered, tail)
                if i < len(ordered) and ordered[i].startswith(tail):
                    return p
        return len(data)

    def feed(self, chunk: bytes) -> bytes:
        """Mask one chunk of a stream; the output of all ``feed`` calls plus ``flush`` equals
        ``mask`` of the whole stream.

        A match starting before the hold point is final (a longer secret starting at the same
        place would make that place a hold point), so only the tail from the hold point waits.
        """
        data = self._pending + chunk if self._pending else chunk
        self._pending = b""
        if not self._sorted or not data:
            return data
        cut = self._hold_point(data)
        spans: list[tuple[int, int]] = []
        for start, end in self._spans(data):
            if start >= cut:
                break
            spans.append((start, end))
            cut = max(cut, end)
        self._pending = data[cut:]
        return self._replace(data[:cut] if cut < len(data) else data, spans)

    def flush(self) -> bytes:
        out, self._pending = self._pending, b""
        return self.mask(out)
