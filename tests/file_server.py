"""A real HTTP file server on 127.0.0.1, run in a thread by the download tests: it serves bytes under URL paths,
honours Range requests (or, built with ranges=False, ignores them as many servers do), can cut a transfer part-way
or hold it there, and counts every request and byte it sent."""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    """What the server did: (path, Range header) of each request, and the body bytes sent per path."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)


class FileServer:
    """Serves `files` ({"/cyclegan/datasets/x.zip": bytes}) at `url`; `cut[path] = n` makes the next response for
    that path announce the whole length but stop after n bytes and close the connection (once); `hold[path] = n`
    makes it send n bytes, then wait until `release` is set before sending the rest (once).

    `ranges`: honour Range requests (206) and say so (`Accept-Ranges: bytes`); False answers every request with the
    whole file (200) and no word about ranges."""

    def __init__(self, ranges: bool = True) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.hold: dict[str, int] = {}
        self.release = threading.Event()
        self.ranges = ranges
        self.announce: dict[str, int] = {}  # a Content-Length to claim for a path instead of its true length
        self.unsized: set[str] = set()  # paths answered without a Content-Length (the body ends when it closes)
        self.served = Served()
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                owner._answer(self)

            def log_message(self, *args) -> None:  # keep pytest's output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()  # a held response ends rather than wait for a client that is gone
        self.httpd.shutdown()
        self.httpd.server_close()

    def sent(self, path: str) -> int:
        """Body bytes sent for `path` so far, over all requests."""
        return self.served.sent.get(path, 0)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path, ranged = handler.path, handler.headers.get("Range", "")
        with self.lock:
            self.served.requests.append((path, ranged))
            cut = self.cut.pop(path, None)
            hold = self.hold.pop(path, None)
        body = self.files.get(path)
        if body is None:
            handler.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", ranged) if self.ranges else None
        if match:
            start = int(match.group(1))
            if start >= len(body):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(body)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            handler.send_response(200)
        if self.ranges:
            handler.send_header("Accept-Ranges", "bytes")
        if path not in self.unsized:
            handler.send_header("Content-Length", str(self.announce.get(path, len(body) - start)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        chunk = body[start:] if cut is None else body[start:start + cut]
        pieces = [chunk] if hold is None else [chunk[:hold], chunk[hold:]]
        for number, piece in enumerate(pieces):
            if number:
                self.release.wait(timeout=120)
            try:
                handler.wfile.write(piece)
                handler.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. it refused the size)
                return
            with self.lock:
                self.served.sent[path] = self.served.sent.get(path, 0) + len(piece)
        if cut is not None:
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early


def refused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (a port bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
