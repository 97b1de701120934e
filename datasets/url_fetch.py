"""Download one video from a URL with yt-dlp (a library here, imported lazily), within limits.

http/https only; no playlists or live streams; allowed extractors only. Bytes: yt-dlp's
`max_filesize`, the format's advertised size, and the byte count in the progress hook. Duration: the
info's `duration` before anything is resolved or downloaded, then the saved file's (PyAV). The
progress hook also polls `should_stop()`. Work happens in a temporary folder, removed on any failure.

SSRF guard: `check_url` vets the URL first. Then every request of yt-dlp (page, redirects, manifests,
media, fragments) goes `YoutubeDL.urlopen` -> RequestDirector -> RequestHandler. Our YoutubeDL's
director holds one handler, a `RequestsRH` subclass (no urllib/ftp/file, websockets, curl_cffi).
requests follows redirects itself, opening a urllib3 connection per host; our `_new_conn` resolves
the host, refuses it unless EVERY address is public (not private, loopback, link-local, multicast,
reserved, unspecified, non-global, nor such IPv4 in mapped/6to4/Teredo IPv6) or `host:port`/`ip:port`
is allowed, and connects to the address it checked: a redirect to a refused host fails before a
socket is opened, and no second DNS lookup leaves a rebinding window (TLS still checks the name).
Never a proxy; no external downloader (ffmpeg pointed at a missing path); formats limited to
http(s)/HLS/DASH, fetched by the native downloaders via `urlopen`. Limits: needs `requests` (else
refused); relies on yt-dlp/urllib3 internals (`_request_director`, `RequestsRH._create_instance`,
`_new_conn`): re-run tests/integration/test_url_fetch.py after upgrades. Not covered: yt-dlp plugins.

Format "bv*[height<=?1080]": best with video, audio optional. Merging ("bv*+ba") needs ffmpeg (absent)
and datasets need frames: 1080p video-only beats the 360p file with sound "b" gives on YouTube.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import types
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InvalidInput, StudioError

log = logging.getLogger("lora_studio.datasets.url_fetch")

DEFAULT_EXTRACTORS = ("Generic", "Youtube", "Vimeo", "Dailymotion", "Twitter", "Bilibili")
FORMAT_SELECTOR = ("bv*[height<=?1080][protocol^=http]/bv*[height<=?1080][protocol^=m3u8]"
                   "/bv*[protocol^=http]/bv*[protocol^=m3u8]")
_GENERIC_COMPANIONS = ("html5mediaembed", "quotedhtml")  # the generic extractor's <video> and quoted-HTML parsers


class UrlRefused(InvalidInput):
    code = "url_refused"


class DownloadError(InvalidInput):
    code = "download_failed"


class FetchCancelled(StudioError):
    """`should_stop()` said stop (a job handler turns this into its own cancellation)."""
    status, code = 409, "cancelled"


@dataclass(frozen=True)
class FetchedVideo:
    path: Path
    title: str
    duration_s: float | None
    extractor: str
    webpage_url: str
    bytes: int


def _non_public(ip: str) -> str | None:
    """Why `ip` is not a public address (None when it is)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        for v4 in (addr.ipv4_mapped, addr.sixtofour, *(addr.teredo or ())):
            if v4 and (reason := _non_public(str(v4))):
                return reason
    for kind in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):
        if getattr(addr, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if addr.is_global else "non-global"


def _norm_host(host: str) -> str:
    host = host.strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class _Guard:
    """Which hosts may be contacted; remembers why it refused one (yt-dlp may wrap the error)."""

    def __init__(self, allowed_hosts: Iterable[str]):
        self.allowed: set[tuple[str, int]] = set()
        self.refusals: list[str] = []
        for entry in allowed_hosts:
            try:
                parts = urllib.parse.urlsplit("//" + str(entry).strip())
                if not parts.hostname or parts.port is None:
                    raise ValueError(entry)
            except ValueError:
                raise InvalidInput(f"Allowed host {entry!r} must be written host:port (e.g. 127.0.0.1:8123)") from None
            self.allowed.add((_norm_host(parts.hostname), parts.port))

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve `host`; raise UrlRefused unless all its addresses may be contacted (OSError: DNS failed)."""
        ips = list(dict.fromkeys(str(i[4][0]) for i in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        if (_norm_host(host), port) in self.allowed:
            return ips
        for ip in ips:
            if (_norm_host(ip), port) not in self.allowed and (reason := _non_public(ip)):
                shown = host if _norm_host(host) == _norm_host(ip) else f"{host} ({ip})"
                self.refusals.append(f"Refused to contact {shown} port {port}: it is a {reason} address; "
                                     "only public addresses may be downloaded from")
                raise UrlRefused(self.refusals[-1])
        return ips

    def check_url(self, url: str) -> None:
        url = url.strip() if isinstance(url, str) else ""
        if not url or len(url) > 4096 or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
            raise UrlRefused("The URL is empty, too long, or contains spaces or control characters")
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UrlRefused(f"Only http:// and https:// URLs can be downloaded (got {scheme or 'no'} scheme)")
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            host = None
        if not host:
            raise UrlRefused("The URL has no valid host name and port")
        try:
            self.addresses(host, port)
        except (OSError, UnicodeError) as e:
            raise DownloadError(f"Cannot resolve the host {host!r} ({e.__class__.__name__})") from None


def check_url(url: str, allowed_hosts: Iterable[str] = ()) -> None:
    """Raise UrlRefused unless `url` is http(s) and its host resolves only to public (or allowed) addresses."""
    _Guard(allowed_hosts).check_url(url)


def _extractor_classes(keys: Iterable[str] | None) -> list[type]:
    from yt_dlp.extractor import gen_extractor_classes

    by_key = {ie.ie_key().lower(): ie for ie in gen_extractor_classes()}
    wanted = [str(k) for k in (DEFAULT_EXTRACTORS if keys is None else keys)]
    unknown = [k for k in wanted if k.lower() not in by_key]
    if unknown or not wanted:
        raise InvalidInput(f"Unknown yt-dlp extractor(s): {', '.join(unknown) or '(none given)'}")
    classes = [by_key[k.lower()] for k in wanted]
    if by_key["generic"] in classes:
        classes += [by_key[k] for k in _GENERIC_COMPANIONS if k in by_key and by_key[k] not in classes]
    return classes


def _clean(message: str) -> str:
    """One line of a yt-dlp message: no colour codes, ERROR: prefix, bug-report or 'caused by' tail."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(message)).strip()
    text = re.sub(r"^(ERROR|WARNING):\s*", "", text).split("; please report this issue")[0]
    text = re.sub(r"\s*\(caused by .*$", "", text, flags=re.S)
    return text.splitlines()[0][:400] if text else "unknown error"


class _Limits:
    """The caps, checked on extracted info (before downloading) and in the progress hook (while)."""

    def __init__(self, max_bytes: int, max_duration_s: float, keys: set[str],
                 progress: Callable[[float, str], None], should_stop: Callable[[], bool] | None):
        self.max_bytes, self.max_duration_s, self.keys = max_bytes, max_duration_s, keys
        self.progress, self.should_stop, self.reported, self.polled = progress, should_stop, 0.0, 0.0
        self.lines: list[str] = []  # yt-dlp's messages (see `keep`), for error reports
        self.too_big = f"The video is larger than the limit of {max_bytes / 1e6:.2f} MB"

    def keep(self, msg: str) -> None:  # yt-dlp's logger: it never prints
        self.lines.append(_clean(msg))
        log.debug("yt-dlp: %s", self.lines[-1])

    def poll_stop(self, throttle: float = 0.0) -> None:
        if self.should_stop is not None and time.monotonic() - self.polled >= throttle:
            self.polled = time.monotonic()
            if self.should_stop():
                raise FetchCancelled("The download was cancelled")

    def check(self, info: dict, *, final: bool) -> None:
        self.poll_stop()  # on every result (final=False), then on the chosen format before its download
        duration, size = info.get("duration"), info.get("filesize") or info.get("filesize_approx")
        if info.get("_type") in ("playlist", "multi_video"):
            raise UrlRefused("This URL is a playlist; give the URL of a single video")
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
            raise UrlRefused("Live streams cannot be downloaded")
        if isinstance(duration, (int, float)) and duration > self.max_duration_s:
            raise UrlRefused(f"The video lasts {duration:.0f} s; the limit is {self.max_duration_s:g} s")
        if isinstance(size, (int, float)) and size > self.max_bytes:
            raise UrlRefused(self.too_big)
        if final and str(info.get("extractor_key") or "").lower() not in self.keys:
            raise UrlRefused(f"The extractor {info.get('extractor_key')} is not allowed")

    def hook(self, d: dict) -> None:
        self.poll_stop(throttle=0.25)
        done, total = d.get("downloaded_bytes") or 0, d.get("total_bytes") or 0
        if max(done, total) > self.max_bytes:
            raise UrlRefused(self.too_big)
        if d.get("status") == "downloading" and time.monotonic() - self.reported >= 0.5:
            self.reported = time.monotonic()
            estimate = total or d.get("total_bytes_estimate") or 0
            self.progress(min(done / estimate, 0.99) if estimate else 0.0,
                          f"Downloading: {done / 1e6:.2f} MB" + (f" of {estimate / 1e6:.2f} MB" if estimate else ""))


def _guarded_downloader_class(guard: _Guard, limits: _Limits) -> type:
    """A YoutubeDL whose only request handler refuses connections to hosts the guard refuses."""
    import urllib3
    from yt_dlp import YoutubeDL
    from yt_dlp.networking.exceptions import RequestError

    try:
        from yt_dlp.networking._requests import RequestsRH
    except ImportError:
        raise DownloadError("URL downloads need the Python package 'requests' (pip install requests)") from None

    def new_conn(conn) -> socket.socket:
        try:
            ips = guard.addresses(getattr(conn, "_dns_host", conn.host), conn.port)
        except UrlRefused as e:  # not a TransportError: yt-dlp neither retries nor skips it
            raise RequestError(e.message) from None
        for n, ip in enumerate(ips, 1):  # connect to the address that was checked: no second lookup
            try:
                return urllib3.util.connection.create_connection(
                    (ip, conn.port), conn.timeout, source_address=conn.source_address,
                    socket_options=conn.socket_options)
            except OSError as e:
                if n == len(ips):
                    raise urllib3.exceptions.NewConnectionError(conn, f"Failed to connect: {e}") from e
        raise urllib3.exceptions.NewConnectionError(conn, "No address to connect to")

    http_conn = type("GuardedHTTPConnection", (urllib3.connection.HTTPConnection,), {"_new_conn": new_conn})
    https_conn = type("GuardedHTTPSConnection", (urllib3.connection.HTTPSConnection,), {"_new_conn": new_conn})
    pools = {"http": type("GuardedHTTPPool", (urllib3.HTTPConnectionPool,), {"ConnectionCls": http_conn}),
             "https": type("GuardedHTTPSPool", (urllib3.HTTPSConnectionPool,), {"ConnectionCls": https_conn})}

    class GuardedRequestsRH(RequestsRH):
        RH_NAME = "requests (SSRF-guarded)"

        def _create_instance(self, **kwargs):
            session = super()._create_instance(**kwargs)
            for adapter in session.adapters.values():
                adapter.poolmanager.pool_classes_by_scheme = dict(pools)
            return session

        def _get_proxies(self, request):
            return {}  # never a proxy: it would connect on our behalf to an unchecked address

    class GuardedYoutubeDL(YoutubeDL):
        @functools.cached_property
        def _request_director(self):
            return self.build_request_director([GuardedRequestsRH])

        def process_ie_result(self, ie_result, download=True, extra_info=None):
            limits.check(ie_result, final=False)  # also before a url/url_transparent result is fetched
            return super().process_ie_result(ie_result, download, extra_info)

        def process_info(self, info_dict):
            limits.check(info_dict, final=True)  # after format selection, before anything is downloaded
            return super().process_info(info_dict)

    return GuardedYoutubeDL


def fetch_video(url: str, dest_dir: Path, *, max_bytes: int, max_duration_s: float,
                allowed_extractors: list[str] | None = None, allowed_hosts: Iterable[str] = (),
                progress: Callable[[float, str], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> FetchedVideo:
    """Download the video at `url` into `dest_dir`. Raises UrlRefused, DownloadError or FetchCancelled."""
    guard = _Guard(allowed_hosts)
    guard.check_url(url)  # scheme and host first: nothing below runs for a refused URL
    url = url.strip()
    if max_bytes <= 0 or max_duration_s <= 0:
        raise InvalidInput("max_bytes and max_duration_s must be positive")
    classes = _extractor_classes(allowed_extractors)
    if not any(ie.suitable(url) for ie in classes):
        raise UrlRefused(f"No allowed extractor ({', '.join(ie.ie_key() for ie in classes)}) handles this URL")
    report = progress or (lambda fraction, message: None)
    limits = _Limits(max_bytes, max_duration_s, {ie.ie_key().lower() for ie in classes}, report, should_stop)
    limits.poll_stop()
    report(0.0, "Looking up the video")
    (dest_dir := Path(dest_dir)).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".url-fetch-", dir=dest_dir))
    params = {
        "logger": types.SimpleNamespace(debug=limits.keep, info=limits.keep, warning=limits.keep, error=limits.keep),
        "quiet": True, "noprogress": True, "no_color": True, "cachedir": False, "noplaylist": True,
        "format": FORMAT_SELECTOR, "max_filesize": max_bytes, "progress_hooks": [limits.hook],
        "allowed_extractors": [re.escape(ie.IE_NAME.lower()) for ie in classes],
        "paths": {"home": str(work), "temp": str(work)}, "outtmpl": {"default": "video.%(ext)s"},
        "external_downloader": {"default": "native"}, "ffmpeg_location": str(work / "no-ffmpeg"),
        "fixup": "never", "proxy": "", "socket_timeout": 20, "retries": 2, "fragment_retries": 2, "updatetime": False,
    }
    try:
        with _guarded_downloader_class(guard, limits)(params) as ydl:
            try:
                info, error = ydl.extract_info(url, download=True) or {}, None
            except (UrlRefused, FetchCancelled):
                raise
            except Exception as e:  # yt-dlp's own errors; a refusal of the guard may be wrapped in them
                info, error = {}, _clean(str(e))
        if guard.refusals:
            raise UrlRefused(guard.refusals[0])
        if error:
            raise DownloadError(f"Download failed: {error}")
        files = [p for p in work.glob("video.*") if p.is_file() and p.suffix != ".part"]
        if not files or files[0].stat().st_size > max_bytes:
            if not files and not any("max-filesize" in line for line in limits.lines):
                raise DownloadError(f"Download failed: {limits.lines[-1] if limits.lines else 'no file was saved'}")
            raise UrlRefused(limits.too_big)
        duration = _probe_duration(files[0]) or info.get("duration")
        if isinstance(duration, (int, float)) and duration > max_duration_s + 1:
            raise UrlRefused(f"The video lasts {duration:.0f} s; the limit is {max_duration_s:g} s")
        title, size = str(info.get("title") or info.get("id") or "video"), files[0].stat().st_size
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", title).strip("._-")[:60] or "video"
        final = dest_dir / f"{stem}-{os.urandom(4).hex()}{files[0].suffix.lower()}"  # never an existing name
        os.replace(files[0], final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(1.0, f"Downloaded {title} ({size / 1e6:.2f} MB)")
    extractor = str(info.get("extractor_key") or "")
    return FetchedVideo(path=final, title=title, duration_s=float(duration) if duration else None,
                        extractor="Generic" if extractor.lower() in _GENERIC_COMPANIONS else extractor,
                        webpage_url=str(info.get("webpage_url") or url), bytes=size)


def _probe_duration(path: Path) -> float | None:
    """The saved file's duration, read by PyAV when installed; DownloadError if it is not a video."""
    try:
        import av
        with av.open(str(path)) as container:
            if container.streams.video:
                return container.duration / 1e6 if container.duration else None
    except ImportError:
        return None
    except Exception:  # PyAV's FFmpegError: not a media file it can read
        pass
    raise DownloadError("The downloaded file is not a readable video")
