"""A live-log HTTP server for the browser test of the log follower, speaking the worker's wire format.

What the page must handle once the worker publishes ``public/logs/live.log`` as a ``reference``
to ``http://<ip>:<port>/log/<token>``: a chunked response that grows while the task runs, ends
when the log is complete, can be resumed with ``?offset=<bytes>`` and carries
``Access-Control-Allow-Origin: *``. This server serves exactly that from lines the test feeds it,
and can break the open connection mid-stream (no final chunk) when the test asks, so the test
sees the page resume from the right offset. It is a real HTTP server on 127.0.0.1 in a thread; only its content is the
test's.
"""

from __future__ import annotations

import http.server
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field


@dataclass
class LogFeed:
    """The log's bytes so far, whether it is complete, and what the server was asked."""

    token: str
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False
    cut_requested: bool = False  # break the open connection (no final chunk) once
    offsets: list[int] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def write(self, text: str) -> None:
        with self.cond:
            self.data += text.encode()
            self.cond.notify_all()

    def cut(self) -> None:
        with self.cond:
            self.cut_requested = True
            self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.complete = True
            self.cond.notify_all()


def _handler(feed: LogFeed) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            return

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            url = urllib.parse.urlsplit(self.path)
            if url.path != f"/log/{feed.token}":
                self.send_error(404)
                return
            query = urllib.parse.parse_qs(url.query)
            offset = int(query.get("offset", ["0"])[0])
            feed.offsets.append(offset)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            sent = offset
            while True:
                with feed.cond:
                    while len(feed.data) <= sent and not feed.complete and not feed.cut_requested:
                        feed.cond.wait(timeout=1)
                    chunk = bytes(feed.data[sent:])
                    complete = feed.complete
                    cut, feed.cut_requested = feed.cut_requested, False
                if cut:
                    self.close_connection = True
                    self.connection.shutdown(2)  # no final chunk: the browser sees a broken stream
                    return
                if chunk:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                    sent += len(chunk)
                if complete and sent >= len(feed.data):
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return

    return Handler


class LiveLogServer:
    def __init__(self) -> None:
        self.feed = LogFeed(token=secrets.token_urlsafe(16))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.feed))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/log/{self.feed.token}"

    def __enter__(self) -> LiveLogServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.feed.finish()
        self.server.shutdown()
        self.server.server_close()
