"""The official aio client's one HTTP request, without debug strings built for nobody.

``taskcluster.aio.asyncutils.makeSingleHttpRequest`` (every call of every ``taskcluster.aio``
client goes through it) builds its ``log.debug`` messages as f-strings, so each call formats the
request's headers, the payload's start, ``str()`` of the response's header multidict and 1 KiB of
the response whether debug logging is on or not: ~15 µs of a call's ~120 µs of client-side
Python here, nine calls per trivial task (issue 15's profile of a worker at capacity 8).
``install()`` puts ``make_single_http_request`` in its place in that module: the same request
(same arguments to ``session.request``, the body read before returning, an implicit session when
none is given) and the same debug messages, formatted only when the logger would emit them.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import aiohttp.client
from taskcluster.aio import asyncutils

log = logging.getLogger(asyncutils.__name__)  # the messages keep the helper's logger


async def make_single_http_request(
    method: str, url: str, payload: Any, headers: Any, session: aiohttp.ClientSession | None = None
) -> aiohttp.ClientResponse:
    """``asyncutils.makeSingleHttpRequest`` with lazily formatted debug messages."""
    method = method.upper()
    debug = log.isEnabledFor(logging.DEBUG)
    if debug:
        log.debug("Making a %s request to %s", method, url)
        log.debug("HTTP Headers: %s", headers)
        log.debug("HTTP Payload: %s (limit 100 char)", str(payload)[:100])
    implicit = session is None
    if session is None:
        session = aiohttp.ClientSession()
    try:
        # As the original: no requoting (it would break the Hawk signature), no redirects.
        async with session.request(
            method,
            aiohttp.client.URL(url, encoded=True),
            data=payload,
            headers=headers,
            skip_auto_headers=[aiohttp.hdrs.CONTENT_TYPE],
            compress=False,
            allow_redirects=False,
        ) as resp:
            response_text = await resp.text()
            if debug:
                log.debug("Received HTTP Status:    %s", resp.status)
                log.debug("Received HTTP Headers: %s", resp.headers)
                log.debug("Received HTTP Payload: %s (limit 1024 char)", response_text[:1024])
            return resp
    finally:
        if implicit:
            await session.close()


def install() -> None:
    """Idempotent; ``tcworker.tcapi.clients`` calls it before any client is made."""
    asyncutils.makeSingleHttpRequest = make_single_http_request  # type: ignore[assignment]
