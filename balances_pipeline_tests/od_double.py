"""A minimal, independent Open Dental-compatible server for tests: not our simulator.

Serves `/api/v1/reports/Aging` from rows a test writes by hand (100 a page, `Offset`),
checks the `ODFHIR` header and records every request, so a test can prove the pipeline
works against any server implementing the `sources.md` subset.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PAGE_SIZE = 100


class OpenDentalDouble:
    def __init__(self, authorization: str, aging_rows: list[dict]) -> None:
        self.authorization = authorization
        self.aging_rows = aging_rows
        self.requests: list[str] = []
        self.status_script: list[int] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"

    def handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, object, dict[str, str]]:
        self.requests.append(handler.path)
        if handler.headers.get("Authorization") != self.authorization:
            return 401, {"message": "Unauthorized"}, {}
        if self.status_script:
            status = self.status_script.pop(0)
            return status, {"message": "scripted"}, {"Retry-After": "0"}
        url = urlparse(handler.path)
        query = parse_qs(url.query)
        if url.path != "/api/v1/reports/Aging" or "DateAsOf" not in query:
            return 404, {"message": "not found"}, {}
        offset = int(query.get("Offset", ["0"])[0])
        return 200, self.aging_rows[offset : offset + PAGE_SIZE], {}


@contextmanager
def serve(double: OpenDentalDouble) -> Iterator[OpenDentalDouble]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            status, body, headers = double.handle(self)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    double.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=double.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield double
    finally:
        double.server.shutdown()
        double.server.server_close()
