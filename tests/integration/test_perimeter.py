"""The perimeter of the API, standalone (see test_comfyui_perimeter.py for inside ComfyUI): a DNS
rebinding page (Host and Origin both evil.example) can neither change nor read anything; bodies a
cross-site form or no-cors fetch can send never reach a handler; unknown paths and methods answer
the JSON error shape."""

from __future__ import annotations

import aiohttp
import pytest
from support.api import V1, assert_error, make_character, make_project, upload
from support.images import image_bytes


@pytest.fixture
async def studio(client):
    """A project, a character and one pending image."""
    p = await make_project(client)
    c = await make_character(client, p["id"], design_prompt="1girl, silver hair")
    created = (await upload(client, c["id"], ("a.png", image_bytes(size=(32, 32), seed=7), "image/png")))["created"]
    return p, c, created[0]


async def unchanged(client, p, c, image):
    """Nothing the refused requests tried happened."""
    projects = (await (await client.get(f"{V1}/projects")).json())["items"]
    assert [x["name"] for x in projects] == [p["name"]]
    character = await (await client.get(f"{V1}/characters/{c['id']}")).json()
    assert character["design_prompt"] == "1girl, silver hair"
    assert (await (await client.get(f"{V1}/images/{image['id']}")).json())["status"] == "pending"


def image_form() -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("files", image_bytes(size=(32, 32), seed=8), filename="b.png", content_type="image/png")
    return data


async def test_a_rebinding_page_can_neither_change_nor_read_anything(client, studio):
    p, c, image = studio
    host = f"evil.example:{client.port}"  # the attacker's name, now resolving to 127.0.0.1
    same_origin = {"Host": host, "Origin": f"http://{host}"}  # to the browser this is the page's own origin
    writes = [("POST", "/projects", {"json": {"name": "Pwned"}}),
              ("PATCH", f"/projects/{p['id']}", {"json": {"name": "Pwned"}}),
              ("PATCH", f"/characters/{c['id']}", {"json": {"design_prompt": "pwned"}}),
              ("POST", f"/images/{image['id']}/approve", {}),
              ("DELETE", f"/characters/{c['id']}", {}),
              ("POST", f"/characters/{c['id']}/images", {"data": image_form()})]
    reads = ["/projects", f"/characters/{c['id']}", f"/images/{image['id']}/file", "/health", "/no-such-route"]
    for method, path, body in writes + [("GET", path, {}) for path in reads]:
        error = await assert_error(await client.request(method, V1 + path, headers=same_origin, **body),
                                   403, "forbidden_host")
        assert "evil.example" in error["message"] and "LORA_STUDIO_ALLOWED_HOSTS" in error["message"]
    for path in ("/", "/lora-studio/web/standalone/host.js"):  # standalone, the panel's page and files too
        await assert_error(await client.get(path, headers=same_origin), 403, "forbidden_host")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"{V1}/events", headers=same_origin)
    assert refused.value.status == 403
    await unchanged(client, p, c, image)
    # the same requests under the server's own name pass: the Host was the only difference
    ws = await client.ws_connect(f"{V1}/events", headers={"Origin": f"http://127.0.0.1:{client.port}"})
    await ws.close()
    assert (await client.get("/lora-studio/web/standalone/host.js")).status == 200
    r = await client.post(f"{V1}/images/{image['id']}/approve", headers={"Origin": f"http://127.0.0.1:{client.port}"})
    assert r.status == 200 and (await r.json())["status"] == "approved"


async def test_loopback_names_ip_literals_and_configured_hosts_are_served(make_client):
    client = await make_client(allowed_hosts=("Studio.LAN:8401", "*.lab.example"))
    served = ["localhost", "LOCALHOST.:80", "aiko.localhost", "127.0.0.1", "127.7.7.7:1", "[::1]:8401",
              "192.168.1.20", "10.0.0.5:8401", "[fe80::1]", "studio.lan", "studio.lan:9999", "STUDIO.lan.",
              "gpu.lab.example", "a.b.lab.example:1"]
    for host in served:
        r = await client.get(f"{V1}/projects", headers={"Host": host})
        assert r.status == 200, (host, await r.text())
    refused = ["lab.example", "studio.lan.evil.example", "evilstudio.lan", "localhost.evil.example",
               "127.0.0.1.nip.io", "user@127.0.0.1", "127.0.0.1:80:80", "[::1", "studio.lan:http", ""]
    for host in refused:
        await assert_error(await client.get(f"{V1}/projects", headers={"Host": host}), 403, "forbidden_host")
    # a configured name works for the panel's writes (its Origin is the same name) and its event socket
    origin = {"Host": "studio.lan:8401", "Origin": "http://studio.lan:8401"}
    r = await client.post(f"{V1}/projects", json={"name": "Moon"}, headers=origin)
    assert r.status == 201, await r.text()
    ws = await client.ws_connect(f"{V1}/events", headers=origin)
    await ws.close()


async def test_bodies_a_cross_site_form_can_send_never_reach_a_handler(client, studio):
    p, c, image = studio
    cases = [("POST", "/projects", "text/plain", b'{"name": "Pwned"}'),
             ("POST", "/projects", "application/x-www-form-urlencoded", b"name=Pwned"),
             ("POST", "/projects", "application/octet-stream", b'{"name": "Pwned"}'),
             ("PATCH", f"/projects/{p['id']}", "text/plain", b'{"name": "Pwned"}'),
             ("PATCH", f"/characters/{c['id']}", "text/plain;charset=UTF-8", b'{"design_prompt": "pwned"}'),
             ("POST", f"/images/{image['id']}/approve", "text/plain", b"x"),  # its handler reads no body
             ("POST", f"/images/{image['id']}/approve", "application/x-www-form-urlencoded", b"a=b"),
             ("POST", f"/images/{image['id']}/approve", "multipart/form-data; boundary=x", b"--x--\r\n"),
             ("DELETE", f"/characters/{c['id']}", "text/plain", b"x"),
             ("POST", f"/characters/{c['id']}/images", "text/plain", b"x"),  # uploads take multipart only
             ("POST", f"/characters/{c['id']}/images", "application/json", b"{}")]
    for method, path, ctype, body in cases:
        r = await client.request(method, V1 + path, data=body, headers={"Content-Type": ctype})
        error = await assert_error(r, 415, "unsupported_media_type")
        assert ("multipart/form-data" if path.endswith("/images") else "application/json") in error["message"]
    r = await client.post(f"{V1}/projects", data=b'{"name": "Pwned"}', skip_auto_headers=["Content-Type"])
    await assert_error(r, 415, "unsupported_media_type")
    await unchanged(client, p, c, image)
    # what the panel, scripts and curl send still works: JSON (any case, with a charset), and no body at all
    r = await client.patch(f"{V1}/projects/{p['id']}", data=b'{"description": "x"}',
                           headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status == 200, await r.text()
    r = await client.post(f"{V1}/images/{image['id']}/approve")  # curl -X POST …/approve
    assert r.status == 200 and (await r.json())["status"] == "approved"


async def test_unknown_paths_and_methods_answer_json(client):
    for path in (f"{V1}/no-such-route", f"{V1}/projects/1/no-such-route", V1, f"{V1}x", "/no-such-page"):
        await assert_error(await client.get(path), 404, "not_found")
    for method, path, allow in (("DELETE", f"{V1}/projects", {"GET", "POST"}),
                                ("PUT", f"{V1}/projects/1", {"DELETE", "GET", "PATCH"}),
                                ("GET", f"{V1}/images/1/approve", {"POST"}),
                                ("POST", f"{V1}/events", {"GET"}),
                                ("POST", "/", {"GET"})):
        r = await client.request(method, path)
        error = await assert_error(r, 405, "method_not_allowed")
        assert set(r.headers["Allow"].split(", ")) - {"HEAD"} == allow  # aiohttp may add HEAD to a GET route
        assert r.headers["Allow"] in error["message"]


def test_allowed_hosts_setting(tmp_path):
    from lora_studio.core.settings import SettingsError, load_settings

    env = {"LORA_STUDIO_ALLOWED_HOSTS": "studio.lan, *.lab.example:8401 ,"}
    assert load_settings(env=env, default_data_dir=tmp_path).allowed_hosts == ("studio.lan", "*.lab.example:8401")
    settings_file = tmp_path / "s.json"
    settings_file.write_text('{"allowed_hosts": "a.lan,b.lan"}')  # a list, or one comma-separated string
    assert load_settings(env={}, settings_file=settings_file, default_data_dir=tmp_path).allowed_hosts == ("a.lan", "b.lan")
    for bad in ("http://studio.lan", "studio.lan/panel", "*", "a b"):
        with pytest.raises(SettingsError, match="allowed_hosts"):
            load_settings(env={"LORA_STUDIO_ALLOWED_HOSTS": bad}, default_data_dir=tmp_path)
