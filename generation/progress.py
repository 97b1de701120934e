"""Follows the studio's generations while ComfyUI runs them: ComfyUI's websocket (`/ws?clientId=…`) sends
each prompt's messages to the client that queued it, so the studio sees its own prompts start, step
(`progress`: value/max) and end. Every `sweep_seconds` (and after every reconnect) the active
generations are refreshed from /queue and /history too, so a message missed while disconnected, or a
prompt ComfyUI lost in a restart, still ends the generation: nothing stays queued for ever.

One daemon thread with its own event loop; it starts with the first generation, stays connected for
`idle_seconds` after the last one ended (the next is often a moment away) and reconnects with a growing
pause (1 s to 30 s) while ComfyUI is down."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from ..core.errors import StudioError, Unavailable

if TYPE_CHECKING:
    from .service import GenerationService

log = logging.getLogger("lora_studio.generation.progress")

ENDS = ("execution_success", "execution_error", "execution_interrupted")


class ProgressWatcher:
    def __init__(self, service: GenerationService, sweep_seconds: float = 5.0, idle_seconds: float = 60.0,
                 give_up_seconds: float = 600.0):
        self.service = service
        self.sweep_seconds = sweep_seconds
        self.idle_seconds = idle_seconds
        self.give_up_seconds = give_up_seconds  # ComfyUI silent this long: its active generations end failed
        self._unanswered_since: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._main, name="lora-studio-generation-progress", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:  # never take the studio down; the next generation starts a new watcher
            log.exception("the generation progress watcher stopped")

    async def _run(self) -> None:
        pause = 1.0
        sweeper = asyncio.create_task(self._sweep_loop())
        try:
            while not self._stop.is_set() and self.service.active_ids():
                try:
                    await self._listen()
                    pause = 1.0
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # refused, down, not a websocket (aiohttp.ClientError, OSError, …)
                    log.info("ComfyUI's websocket is not available (%s); retrying in %.0f s", e, pause)
                    await self._sleep(pause)
                    pause = min(30.0, pause * 2)
        finally:
            sweeper.cancel()

    async def _sleep(self, seconds: float) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while not self._stop.is_set() and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.2)

    async def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.to_thread(self.sweep)
            await self._sleep(self.sweep_seconds)

    def sweep(self) -> None:
        """Refresh every active generation from ComfyUI's queue and history. While ComfyUI does not answer they
        stay as they are; after `give_up_seconds` of silence they end failed, saying so (never stuck)."""
        for gid in self.service.active_ids():
            try:
                self.service.get(gid, refresh=True)
            except Unavailable as e:
                now = time.monotonic()
                self._unanswered_since = self._unanswered_since or now
                if now - self._unanswered_since < self.give_up_seconds:
                    log.debug("cannot refresh generation %s: %s", gid, e.message)
                    return
                for active in self.service.active_ids():
                    self.service.give_up(active, f"ComfyUI has not answered for {self.give_up_seconds / 60:g} "
                                                 f"minutes ({e.message}): generate again when it is back")
                self._unanswered_since = None
                return
            except StudioError as e:  # ComfyUI answered with an error: try again on the next sweep
                log.info("cannot refresh generation %s: %s", gid, e.message)
                self._unanswered_since = None
                return
        self._unanswered_since = None

    async def _listen(self) -> None:
        import aiohttp

        client = self.service.client()
        url = client.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout, headers=dict(client.headers)) as session:
            async with session.ws_connect(f"{url}/ws", params={"clientId": self.service.client_id},
                                          heartbeat=30) as ws:
                log.info("following generations on ComfyUI's websocket at %s", client.base_url)
                await asyncio.to_thread(self.sweep)  # what happened while nobody listened
                loop = asyncio.get_running_loop()
                idle_since = loop.time()
                while not self._stop.is_set():
                    try:
                        msg = await ws.receive(timeout=1.0)
                    except asyncio.TimeoutError:
                        if await asyncio.to_thread(self.service.active_ids):
                            idle_since = loop.time()
                        elif loop.time() - idle_since > self.idle_seconds:
                            return  # nothing to follow: the next generation starts the watcher again
                        continue
                    if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                        raise OSError("ComfyUI closed the websocket")
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await asyncio.to_thread(self.handle, msg.data)

    def handle(self, text: str) -> None:
        """One websocket message from ComfyUI (binary preview frames never reach here)."""
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return
        kind, data = message.get("type"), message["data"]
        prompt_id = data.get("prompt_id")
        if not isinstance(prompt_id, str):
            return
        if kind == "progress":
            value, top = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(top, int | float) and top > 0:
                self.service.record_progress(prompt_id, value / top)
        elif kind == "execution_start":
            self.service.record_progress(prompt_id, 0.0)
        elif kind in ENDS:
            gid = self.service.by_prompt(prompt_id)
            if gid is not None:
                try:
                    self.service.get(gid, refresh=True)
                except StudioError as e:
                    log.info("cannot read the end of generation %s from ComfyUI: %s", gid, e.message)
