"""A tiny local HTTP server with real MP4 files, for tests that run yt-dlp without the internet.

Routes (GET and HEAD):
  /video.mp4    a 2 s 64x48 MPEG-4 video, with Content-Length
  /long.mp4     a 3 s video
  /endless.mp4  video/mp4 bytes without Content-Length that keep coming (64 kB pieces, up to 20 s)
  /slow.mp4     the 2 s video sent in 512-byte pieces, 40 ms apart
  /page.html    an HTML page with a <video> element whose <source> is /video.mp4
  /two.html     an HTML page with two <video> elements (yt-dlp sees a playlist)
  /long.html    an HTML page whose schema.org VideoObject (JSON-LD) says PT3S and points at /long.mp4
  /redirect?to=URL   302 to URL
  /hls.m3u8?base=URL  an HLS playlist with one 2 s MPEG-TS segment at URL/seg0.ts (default: this server)
  /seg0.ts      that segment

Every request's path (with its query) is appended to `server.requests` and every accepted TCP
connection counts in `server.connections`, so a test can assert that a server was never contacted.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_mp4(seconds: float, *, fps: int = 10, width: int = 64, height: int = 48, fmt: str = "mp4") -> bytes:
    """Encode a small MP4 (MPEG-4 Part 2, noise frames so it does not compress to nothing) with PyAV."""
    import av
    import numpy as np

    rng = np.random.default_rng(int(seconds * 1000))
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(round(seconds * fps)):
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


_VIDEOS: dict[str, bytes] = {}


def _video(seconds: float, fmt: str = "mp4") -> bytes:
    key = f"{seconds}.{fmt}"
    if key not in _VIDEOS:
        _VIDEOS[key] = make_mp4(seconds, fmt=fmt)
    return _VIDEOS[key]


@dataclass
class VideoServer:
    host: str
    port: int
    requests: list[str] = field(default_factory=list)
    connections: int = 0

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host_port}{path}"

    @property
    def video(self) -> bytes:
        return _video(2)

    @property
    def long_video(self) -> bytes:
        return _video(3)

    @property
    def segment(self) -> bytes:
        return _video(2, "mpegts")

    def media_requests(self) -> list[str]:
        return [p for p in self.requests if urllib.parse.urlsplit(p).path.endswith((".mp4", ".ts"))]


class _Handler(BaseHTTPRequestHandler):
    server_version = "VideoTestServer/1"
    state: VideoServer  # set on the subclass made per server

    def setup(self) -> None:
        self.state.connections += 1
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        self.state.requests.append(self.path)
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        if path == "/redirect":
            target = urllib.parse.parse_qs(parts.query).get("to", [""])[0]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/hls.m3u8":
            base = urllib.parse.parse_qs(parts.query).get("base", [self.state.url("")])[0]
            playlist = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                        f"#EXTINF:2.0,\n{base}/seg0.ts\n#EXT-X-ENDLIST\n")
            self._send(playlist.encode(), "application/vnd.apple.mpegurl", body=body)
        elif path == "/seg0.ts":
            self._send(self.state.segment, "video/mp2t", body=body)
        elif path == "/video.mp4":
            self._send(self.state.video, "video/mp4", body=body)
        elif path == "/long.mp4":
            self._send(self.state.long_video, "video/mp4", body=body)
        elif path == "/endless.mp4":
            self._send_endless(body=body)
        elif path == "/slow.mp4":
            self._send(self.state.video, "video/mp4", body=body, piece=512, pause=0.04)
        elif path == "/page.html":
            html = ("<!doctype html><html><head><title>Test page</title></head><body>"
                    '<video controls width="64" height="48"><source src="/video.mp4" type="video/mp4">'
                    "</video></body></html>")
            self._send(html.encode(), "text/html; charset=utf-8", body=body)
        elif path == "/two.html":
            html = ("<!doctype html><html><head><title>Two videos</title></head><body>"
                    '<video src="/video.mp4"></video><video src="/long.mp4"></video></body></html>')
            self._send(html.encode(), "text/html; charset=utf-8", body=body)
        elif path == "/long.html":
            ld = {"@context": "https://schema.org", "@type": "VideoObject", "name": "Long video",
                  "duration": "PT3S", "contentUrl": self.state.url("/long.mp4"),
                  "uploadDate": "2024-01-01"}
            html = ("<!doctype html><html><head><title>Long video</title>"
                    f'<script type="application/ld+json">{json.dumps(ld)}</script></head><body></body></html>')
            self._send(html.encode(), "text/html; charset=utf-8", body=body)
        else:
            self._send(b"not found", "text/plain", body=body, status=404)

    def _send_endless(self, *, body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.end_headers()
        self.close_connection = True  # no Content-Length: the body ends when the connection closes
        deadline = time.monotonic() + 20
        piece = self.state.video[:1024] * 64
        try:
            while body and time.monotonic() < deadline:
                self.wfile.write(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, data: bytes, content_type: str, *, body: bool, status: int = 200,
              piece: int = 0, pause: float = 0.0) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not body:
            return
        try:
            if not piece:
                self.wfile.write(data)
                return
            for start in range(0, len(data), piece):
                self.wfile.write(data[start:start + piece])
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a cancelled or refused download)


@contextmanager
def serve_videos() -> Iterator[VideoServer]:
    """Run a server on 127.0.0.1 (a free port) in a thread for the duration of the `with` block."""
    state = VideoServer(host="127.0.0.1", port=0)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
