"""URL video download: real yt-dlp against local HTTP servers (tests/support/http_video_server.py)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from lora_studio.core.errors import InvalidInput
from lora_studio.datasets.url_fetch import (
    DownloadError,
    FetchCancelled,
    UrlRefused,
    check_url,
    fetch_video,
)
from support.http_video_server import VideoServer, serve_videos

LIMITS = {"max_bytes": 10_000_000, "max_duration_s": 60}


@pytest.fixture(autouse=True)
def _offline_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server():
    with serve_videos() as s:
        yield s


@pytest.fixture(scope="module")
def other():
    """A second local server that no test allows: it must never be contacted."""
    with serve_videos() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh_logs(server: VideoServer, other: VideoServer):
    for s in (server, other):
        s.requests.clear()
        s.connections = 0


@pytest.fixture
def dest(tmp_path) -> Path:
    return tmp_path / "videos"


def files_in(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_direct_mp4_downloads_with_progress(server, dest):
    import av

    calls: list[tuple[float, str]] = []
    got = fetch_video(server.url("/video.mp4"), dest, **LIMITS, allowed_hosts=[server.host_port],
                      progress=lambda f, m: calls.append((f, m)))

    assert files_in(dest) == [got.path]  # the temporary folder is gone
    assert got.path.parent == dest and got.path.suffix == ".mp4"
    assert got.path.read_bytes() == server.video and got.bytes == len(server.video)
    assert got.extractor == "Generic" and got.webpage_url == server.url("/video.mp4")
    assert got.duration_s == pytest.approx(2.0, abs=0.2)
    fractions = [f for f, _ in calls]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    assert any(0 < f < 1 for f in fractions), "no progress reported while downloading"
    with av.open(str(got.path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
        assert sum(1 for _ in container.decode(video=0)) == 20


def test_page_with_embedded_video_uses_generic_extractor(server, dest):
    got = fetch_video(server.url("/page.html"), dest, **LIMITS, allowed_hosts=[server.host_port])

    assert got.extractor == "Generic" and got.title.startswith("Test page")
    assert got.path.read_bytes() == server.video
    assert server.requests[0] == "/page.html" and "/video.mp4" in server.requests


def test_redirect_within_allowed_server_is_followed(server, dest):
    got = fetch_video(server.url("/redirect?to=/video.mp4"), dest, **LIMITS, allowed_hosts=[server.host_port])
    assert got.path.read_bytes() == server.video


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://127.0.0.1:{port}/video.mp4", "javascript:alert(1)",
    "data:video/mp4;base64,AAAA", "gopher://127.0.0.1:{port}/", "127.0.0.1:{port}/video.mp4",
    "http://127.0.0.1:{port}/video.mp4 http://x", "",
])
def test_non_http_urls_refused_before_any_request(server, dest, monkeypatch, url):
    url = url.format(port=server.port)
    lookups: list[object] = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: lookups.append(a) or pytest.fail("DNS lookup"))
    with pytest.raises(UrlRefused):
        check_url(url, [server.host_port])
    with pytest.raises(UrlRefused):
        fetch_video(url, dest, **LIMITS, allowed_hosts=[server.host_port])
    assert lookups == [] and server.connections == 0 and files_in(dest) == []


def test_loopback_server_not_in_allowed_hosts_is_refused(server, other, dest):
    for allowed in ([], [other.host_port], [f"localhost:{other.port}"]):
        with pytest.raises(UrlRefused, match="loopback"):
            fetch_video(server.url("/video.mp4"), dest, **LIMITS, allowed_hosts=allowed)
    assert server.connections == 0 and server.requests == [] and files_in(dest) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "[::ffff:127.0.0.1]"])
def test_redirect_to_unallowed_server_is_blocked_before_connecting(server, other, dest, host):
    target = f"http://{host}:{other.port}/video.mp4"
    with pytest.raises(UrlRefused, match="Refused to contact"):
        fetch_video(server.url(f"/redirect?to={target}"), dest, **LIMITS, allowed_hosts=[server.host_port])
    assert len(server.requests) == 1 and server.requests[0].startswith("/redirect?to=")
    assert other.requests == [] and other.connections == 0  # not even a TCP connection
    assert files_in(dest) == []


def test_hls_segments_are_fetched_through_the_guard(server, other, dest):
    got = fetch_video(server.url("/hls.m3u8"), dest, **LIMITS, allowed_hosts=[server.host_port])
    assert "/seg0.ts" in server.requests and got.path.read_bytes() == server.segment
    assert got.duration_s == pytest.approx(2.0, abs=0.3)

    server.requests.clear()
    with pytest.raises(UrlRefused, match="Refused to contact"):
        fetch_video(server.url(f"/hls.m3u8?base=http://127.0.0.1:{other.port}"), dest, **LIMITS,
                    allowed_hosts=[server.host_port])
    assert any(p.startswith("/hls.m3u8") for p in server.requests)
    assert other.requests == [] and other.connections == 0
    assert files_in(dest) == [got.path]


def test_max_bytes_from_content_length_refused(server, dest):
    with pytest.raises(UrlRefused, match="larger than the limit"):
        fetch_video(server.url("/video.mp4"), dest, max_bytes=5_000, max_duration_s=60,
                    allowed_hosts=[server.host_port])
    assert files_in(dest) == []


def test_max_bytes_enforced_while_downloading(server, dest):
    """No Content-Length and a body that keeps coming: the running byte count must stop it."""
    started = time.monotonic()
    with pytest.raises(UrlRefused, match="larger than the limit"):
        fetch_video(server.url("/endless.mp4"), dest, max_bytes=200_000, max_duration_s=60,
                    allowed_hosts=[server.host_port])
    assert time.monotonic() - started < 8
    assert files_in(dest) == []


def test_max_duration_refused_before_download(server, dest):
    with pytest.raises(UrlRefused, match="lasts 3 s"):
        fetch_video(server.url("/long.html"), dest, max_bytes=10_000_000, max_duration_s=1,
                    allowed_hosts=[server.host_port])
    assert server.requests == ["/long.html"] and server.media_requests() == []
    assert files_in(dest) == []


def test_playlist_refused(server, dest):
    with pytest.raises(UrlRefused, match="playlist"):
        fetch_video(server.url("/two.html"), dest, **LIMITS, allowed_hosts=[server.host_port])
    assert server.media_requests() == [] and files_in(dest) == []


def test_should_stop_cancels_and_leaves_no_partial_file(server, dest):
    calls: list[float] = []
    started = time.monotonic()
    with pytest.raises(FetchCancelled):
        fetch_video(server.url("/slow.mp4"), dest, **LIMITS, allowed_hosts=[server.host_port],
                    progress=lambda f, m: calls.append(f), should_stop=lambda: any(f > 0 for f in calls))
    assert any(f > 0 for f in calls) and 1.0 not in calls  # stopped in the middle of the download
    assert time.monotonic() - started < 1.5  # the whole slow body takes about 1.7 s
    assert files_in(dest) == []


def test_extractor_not_allowed_refused(server, dest):
    with pytest.raises(UrlRefused, match="No allowed extractor"):
        fetch_video(server.url("/video.mp4"), dest, **LIMITS, allowed_extractors=["Youtube"],
                    allowed_hosts=[server.host_port])
    with pytest.raises(InvalidInput, match="Unknown yt-dlp extractor"):
        fetch_video(server.url("/video.mp4"), dest, **LIMITS, allowed_extractors=["NoSuchSite"],
                    allowed_hosts=[server.host_port])
    assert server.requests == [] and files_in(dest) == []


def test_http_error_is_a_clean_download_error(server, dest):
    with pytest.raises(DownloadError) as err:
        fetch_video(server.url("/missing.mp4"), dest, **LIMITS, allowed_hosts=[server.host_port])
    assert "404" in err.value.message and "\x1b[" not in err.value.message
    assert "Traceback" not in err.value.message and files_in(dest) == []


@pytest.mark.parametrize("ip", [
    "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "127.1.2.3", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "255.255.255.255", "[::1]", "[::]", "[fe80::1]", "[fc00::1]", "[ff02::1]",
    "[::ffff:10.0.0.1]", "[2002:a00:1::]", "[64:ff9b::7f00:1]",
])
def test_non_public_addresses_refused(ip):
    with pytest.raises(UrlRefused, match="Refused to contact"):
        check_url(f"http://{ip}/video.mp4", [])
    check_url(f"http://{ip}:8123/video.mp4", [f"{ip}:8123"])  # unless explicitly allowed


@pytest.mark.parametrize("ip", ["93.184.215.14", "[2606:4700:4700::1111]"])
def test_public_addresses_pass(ip):
    check_url(f"https://{ip}/video.mp4", [])


def test_malformed_allowed_host_is_invalid_input():
    with pytest.raises(InvalidInput, match="host:port"):
        check_url("http://93.184.215.14/", ["127.0.0.1"])
