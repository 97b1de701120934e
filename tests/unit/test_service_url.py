"""One parser for a server's address (ComfyUI and Ollama clients share it)."""

from __future__ import annotations

import base64

import pytest
from lora_studio.classification.ollama import OllamaBackend
from lora_studio.core.errors import InvalidInput
from lora_studio.core.http import service_url
from lora_studio.generation.client import ComfyUIClient


def test_credentials_become_a_basic_header_and_leave_the_url() -> None:
    url, headers = service_url(" http://al%40ce:p%3Ass@example.lan:8188/comfy/ ", "ComfyUI", "http://x")
    assert url == "http://example.lan:8188/comfy"
    assert headers == {"Authorization": "Basic " + base64.b64encode(b"al@ce:p:ss").decode()}


def test_a_given_header_wins_and_ipv6_hosts_keep_their_brackets() -> None:
    url, headers = service_url("https://u:p@[::1]:11434", "Ollama", "http://x", {"Authorization": "Bearer t"})
    assert (url, headers) == ("https://[::1]:11434", {"Authorization": "Bearer t"})


@pytest.mark.parametrize("bad", ["ftp://host", "http://", "host:8188", "http://host:99999", ""])
def test_bad_addresses_name_the_service(bad: str) -> None:
    with pytest.raises(InvalidInput, match="The Ollama URL"):
        service_url(bad, "Ollama", "http://127.0.0.1:11434")


def test_both_clients_read_an_address_the_same_way() -> None:
    address = "http://me:secret@10.0.0.5:9000/base/"
    comfy, ollama = ComfyUIClient(address), OllamaBackend(address, "llava")
    assert comfy.base_url == ollama.base_url == "http://10.0.0.5:9000/base"
    assert comfy.headers == ollama.headers == service_url(address, "x", "y")[1]
