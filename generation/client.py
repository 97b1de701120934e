"""A synchronous client for ComfyUI's HTTP API (stdlib only; call it from worker threads).

Errors are StudioErrors whose messages are safe to show: ComfyUI down or slow -> Unavailable (503),
ComfyUI refusing a request -> UpstreamError (502). Credentials (URL user info, headers) never appear
in messages.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

from ..core.errors import InvalidInput, NotFound, Unavailable, UpstreamError
from ..core.http import TransportError, direct_opener, exchange, service_url

log = logging.getLogger("lora_studio.comfy")

_SNIPPET = 200  # characters of an unexpected answer quoted in an error message


class GraphRefused(UpstreamError):
    """ComfyUI answered 400 to POST /prompt; `body` is its answer ({"error": …, "node_errors": …})."""

    def __init__(self, message: str, body: Any):
        super().__init__(message)
        self.body = body

    @property
    def node_errors(self) -> dict:
        errors = self.body.get("node_errors") if isinstance(self.body, dict) else None
        return errors if isinstance(errors, dict) else {}


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "")


class ComfyUIClient:
    """Talks to one ComfyUI server. `headers` (e.g. Authorization) go with every request."""

    def __init__(self, base_url: str, timeout: float = 30, headers: Mapping[str, str] | None = None):
        if not isinstance(base_url, str) or not base_url.strip():
            raise InvalidInput("The ComfyUI URL is required, e.g. http://127.0.0.1:8188.")
        self.base_url, self.headers = service_url(base_url, "ComfyUI", "http://127.0.0.1:8188", headers)
        if timeout is None or timeout <= 0:
            raise InvalidInput("The ComfyUI timeout must be a positive number of seconds.")
        self.timeout = float(timeout)
        # ComfyUI is a local/LAN service: don't send its requests through the environment's proxies.
        self._opener = direct_opener()

    def __repr__(self) -> str:
        return f"ComfyUIClient({self.base_url!r})"

    # -- transport -------------------------------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = self.base_url + path
        return url + "?" + urllib.parse.urlencode(query) if query else url

    def _request(self, method: str, path: str, payload: Any = None, *,
                 query: Mapping[str, Any] | None = None, timeout: float | None = None,
                 body: tuple[bytes, str] | None = None) -> tuple[int, bytes]:
        """(status, body) for any HTTP answer; raises Unavailable when ComfyUI can't be reached
        (within `timeout` seconds, default the client's). `body`: raw bytes and their content type
        instead of a JSON `payload`."""
        data = None
        headers = {"Accept": "application/json", **self.headers}
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif body is not None:
            data, headers["Content-Type"] = body
        request = urllib.request.Request(self._url(path, query), data=data, headers=headers, method=method)
        try:
            return exchange(self._opener, request, self.timeout if timeout is None else timeout)
        except TransportError as exc:
            if exc.protocol:
                raise UpstreamError(f"ComfyUI at {self.base_url} did not answer {method} {path} in HTTP: "
                                    f"{exc.why}") from None
            log.warning("ComfyUI %s %s failed: %s", method, path, exc.why)
            raise Unavailable(f"ComfyUI at {self.base_url} is not reachable: {exc.why}") from None

    def _json(self, method: str, path: str, payload: Any = None, *,
              query: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        status, raw = self._request(method, path, payload, query=query, timeout=timeout)
        if not 200 <= status < 300:
            raise self._http_error(method, path, status, raw)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UpstreamError(f"ComfyUI at {self.base_url} answered {method} {path} with something "
                                f"that is not JSON: {_snippet(raw)!r}") from None

    def _http_error(self, method: str, path: str, status: int, raw: bytes) -> UpstreamError:
        if status in (401, 403):
            return UpstreamError(f"ComfyUI at {self.base_url} refused {method} {path} (HTTP {status}): "
                                 "check the credentials set for it")
        return UpstreamError(f"ComfyUI at {self.base_url} answered HTTP {status} to {method} {path}: "
                             f"{_snippet(raw) or 'no details'}")

    # -- API ---------------------------------------------------------------------------------------

    def queue_prompt(self, graph: dict, client_id: str | None = None,
                     extra_pnginfo: dict | None = None) -> dict:
        """Queue an API-format graph; answers {"prompt_id", "number", "node_errors"}.

        Raises GraphRefused (an UpstreamError) with ComfyUI's errors in one line when it refuses it.
        """
        if not isinstance(graph, dict) or not graph:
            raise InvalidInput("The graph to queue must be a non-empty object of nodes.")
        body: dict[str, Any] = {"prompt": graph}
        if client_id is not None:
            body["client_id"] = client_id
        if extra_pnginfo is not None:
            body["extra_data"] = {"extra_pnginfo": extra_pnginfo}
        status, raw = self._request("POST", "/prompt", body)
        if status == 400:
            try:
                answer = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                answer = _snippet(raw)
            message = f"ComfyUI refused the graph: {summarize_errors(answer)}"
            log.info("%s", message)
            raise GraphRefused(message, answer)
        if not 200 <= status < 300:
            raise self._http_error("POST", "/prompt", status, raw)
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if not isinstance(answer, dict) or not answer.get("prompt_id"):
            raise UpstreamError(f"ComfyUI at {self.base_url} accepted the graph without a prompt id: "
                                f"{_snippet(raw)!r}")
        log.info("ComfyUI queued prompt %s (#%s)", answer["prompt_id"], answer.get("number"))
        return answer

    def history(self, prompt_id: str) -> dict | None:
        """The history entry of one prompt ({"prompt", "outputs", "status", …}), None while ComfyUI has none."""
        if not isinstance(prompt_id, str) or not prompt_id:
            raise InvalidInput("A prompt id is required.")
        answer = self._json("GET", "/history/" + urllib.parse.quote(prompt_id, safe=""))
        if not isinstance(answer, dict) or not answer:
            return None
        entry = answer.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def queue(self) -> dict:
        """ComfyUI's queue: {"queue_running": [...], "queue_pending": [...]}."""
        answer = self._json("GET", "/queue")
        if not isinstance(answer, dict):
            raise UpstreamError(f"ComfyUI at {self.base_url} answered GET /queue with an unexpected shape")
        return answer

    def object_info(self, node_class: str | None = None, *, timeout: float | None = None) -> dict:
        """Every node class ComfyUI has, with its inputs and outputs ({node_class: definition}); with
        `node_class`, only that one (ComfyUI's /object_info/{node_class}: a few KB instead of ~1 MB)."""
        path = "/object_info" if node_class is None else "/object_info/" + urllib.parse.quote(node_class, safe="")
        answer = self._json("GET", path, timeout=timeout)
        if not isinstance(answer, dict):
            raise UpstreamError(f"ComfyUI at {self.base_url} answered GET {path} with an unexpected shape")
        return answer

    def delete_queued(self, prompt_ids: list[str]) -> None:
        """Take prompts that have not started off ComfyUI's queue (its POST /queue {"delete": [...]});
        a prompt already running or finished is not affected (interrupt stops a running one)."""
        self._expect_ok("POST", "/queue", {"delete": list(prompt_ids)})

    def upload_image(self, data: bytes, filename: str, subfolder: str = "lora_studio") -> str:
        """Put an image into ComfyUI's input folder (POST /upload/image, overwriting a file of the same
        name) and return the name a LoadImage node takes: "subfolder/name" as ComfyUI answers it."""
        boundary = uuid.uuid4().hex
        safe = filename.replace('"', "").replace("\r", "").replace("\n", "") or "image.png"
        parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{safe}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"]
        for name, value in (("subfolder", subfolder), ("type", "input"), ("overwrite", "true")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        payload = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, raw = self._request("POST", "/upload/image",
                                    body=(payload, f"multipart/form-data; boundary={boundary}"))
        if not 200 <= status < 300:
            raise self._http_error("POST", "/upload/image", status, raw)
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str) or not answer["name"]:
            raise UpstreamError(f"ComfyUI at {self.base_url} answered POST /upload/image without a file name: "
                                f"{_snippet(raw)!r}")
        sub = answer.get("subfolder") if isinstance(answer.get("subfolder"), str) else ""
        return _join(sub, answer["name"])

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        """Ask ComfyUI to unload models and/or free memory (e.g. before training on the same GPU)."""
        self._expect_ok("POST", "/free", {"unload_models": bool(unload_models), "free_memory": bool(free_memory)})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the prompt ComfyUI is running (only if it is `prompt_id`, when given)."""
        self._expect_ok("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def _expect_ok(self, method: str, path: str, payload: Any) -> None:
        status, raw = self._request(method, path, payload)
        if not 200 <= status < 300:
            raise self._http_error(method, path, status, raw)

    def view_url(self, filename: str, subfolder: str = "", type: str = "output") -> str:
        """The URL of a file ComfyUI saved (as listed in a history entry's outputs)."""
        return self._url("/view", {"filename": filename, "subfolder": subfolder or "", "type": type})

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """The bytes of a file ComfyUI saved; NotFound when it has no such file."""
        query = {"filename": filename, "subfolder": subfolder or "", "type": type}
        status, raw = self._request("GET", "/view", query=query)
        if status == 404:
            raise NotFound(f"ComfyUI has no {type} file {_join(subfolder, filename)!r}")
        if not 200 <= status < 300:
            raise self._http_error("GET", "/view", status, raw)
        return raw


def queue_ids(queue: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(running, pending) prompt ids of a GET /queue answer (each entry is [number, prompt_id, graph, …])."""
    def ids(key: str) -> list[str]:
        return [e[1] for e in queue.get(key) or [] if isinstance(e, list | tuple) and len(e) > 1]

    return ids("queue_running"), ids("queue_pending")


def _join(subfolder: str, filename: str) -> str:
    return f"{subfolder.strip('/')}/{filename}" if subfolder else filename


def summarize_errors(result: Any) -> str:
    """One readable line for a `validate_graph` result or a ComfyUI 400 body (any shape)."""
    if not isinstance(result, dict):
        return str(result)[:500]
    error = result.get("error")
    if isinstance(error, dict):
        head = str(error.get("message") or error.get("type") or "invalid graph")
        if error.get("details") and not result.get("node_errors"):
            head += f" ({error['details']})"
    else:
        head = str(error or "invalid graph")
    parts: list[str] = []
    node_errors = result.get("node_errors")
    if isinstance(node_errors, dict):
        for node_id in sorted(node_errors, key=lambda k: (len(str(k)), str(k))):
            entry = node_errors[node_id] if isinstance(node_errors[node_id], dict) else {}
            label = f"node {node_id} ({entry.get('class_type', '?')})"
            for err in entry.get("errors") or []:
                if isinstance(err, dict):
                    text = str(err.get("message") or err.get("type") or "error")
                    if err.get("details"):
                        text += f": {err['details']}"
                else:
                    text = str(err)
                parts.append(f"{label}: {text}")
    return head + (" — " + "; ".join(parts) if parts else "")
