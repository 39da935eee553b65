"""`api_keys`: with keys configured, every /v1 route refuses any other key with the API's 401."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from mockserver.admin_client import AdminClient
from mockserver.server import MockServer
from mockserver.settings import load_settings
from tests.conftest import FAST_TIMING

HELLO = [{"role": "user", "content": "Hello"}]
MESSAGE = {"model": "claude-opus-4-7", "max_tokens": 8, "messages": HELLO}
BATCHES = "/v1/messages/batches"
KEYS = {"api_keys": ["sk-good"], "organizations": {"team": {"keys": ["sk-team"]}}}


def headers(key: str, style: str, version: str) -> dict[str, str]:
    auth = {"x-api-key": key} if style == "x-api-key" else {"authorization": f"Bearer {key}"}
    return {**auth, "anthropic-version": version}


AUTH_STYLES = [
    (style, version) for style in ("x-api-key", "bearer") for version in ("2023-06-01", "2026-10-21")
]


@pytest.fixture(scope="module")
def guarded():
    settings = load_settings(environ={}, overrides={"port": 0, "timing": FAST_TIMING, **KEYS})
    with MockServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def batch_id(guarded) -> str:
    client = anthropic.Anthropic(api_key="sk-good", base_url=guarded.url, max_retries=0)
    created = client.messages.batches.create(requests=[{"custom_id": "a", "params": MESSAGE}])
    return created.id


def every_v1_route(batch_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("POST", "/v1/messages", MESSAGE),
        ("POST", "/v1/messages/count_tokens", {"model": "claude-opus-4-7", "messages": HELLO}),
        ("POST", BATCHES, {"requests": [{"custom_id": "b", "params": MESSAGE}]}),
        ("GET", BATCHES, None),
        ("GET", f"{BATCHES}/{batch_id}", None),
        ("GET", f"{BATCHES}/{batch_id}/results", None),
        ("POST", f"{BATCHES}/{batch_id}/cancel", None),
        ("DELETE", f"{BATCHES}/{batch_id}", None),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/claude-opus-4-7", None),
    ]


@pytest.mark.parametrize(("style", "version"), AUTH_STYLES)
def test_every_v1_route_refuses_an_unknown_key(guarded, batch_id, style, version):
    for method, path, body in every_v1_route(batch_id):
        response = httpx.request(
            method, guarded.url + path, json=body, headers=headers("sk-bad", style, version)
        )
        assert response.status_code == 401, (method, path, response.text)
        assert response.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            "request_id": response.headers["request-id"],
        }


@pytest.mark.parametrize(("style", "version"), AUTH_STYLES)
def test_configured_and_organisation_keys_are_accepted(guarded, batch_id, style, version):
    for key in ("sk-good", "sk-team"):
        # Reads only: a cancel or delete by the batch's own organisation would change it for the rest.
        for method, path, body in every_v1_route(batch_id)[:6] + every_v1_route(batch_id)[-2:]:
            if key == "sk-team" and batch_id in path:
                continue  # another organisation's batch is a 404, as on the real API
            response = httpx.request(
                method, guarded.url + path, json=body, headers=headers(key, style, version)
            )
            assert response.status_code == 200, (key, method, path, response.text)


def test_the_sdk_sees_an_authentication_error(guarded):
    bad = anthropic.Anthropic(api_key="sk-bad", base_url=guarded.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(**MESSAGE)
    assert caught.value.type == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        bad.models.list()
    with pytest.raises(anthropic.AuthenticationError):
        with bad.messages.stream(**MESSAGE) as stream:
            stream.get_final_message()
    good = anthropic.Anthropic(api_key="sk-good", base_url=guarded.url, max_retries=0)
    assert good.messages.create(**MESSAGE).usage.output_tokens > 0


def test_keys_from_the_environment_and_an_admin_patch(start_server):
    settings = load_settings(environ={"MOCKSERVER_API_KEYS": '["sk-a", "sk-b"]'}, overrides={"port": 0})
    with MockServer(settings) as server:
        for key, status in (("sk-a", 200), ("sk-b", 200), ("sk-c", 401)):
            response = httpx.post(
                f"{server.url}/v1/messages", json=MESSAGE, headers=headers(key, "bearer", "2026-10-21")
            )
            assert response.status_code == status, key
    open_server = start_server()
    assert httpx.get(
        f"{open_server.url}/v1/models", headers=headers("anything", "x-api-key", "2023-06-01")
    ).is_success
    with AdminClient(open_server.url) as admin:
        admin.configure(api_keys=["sk-only"])
    refused = httpx.get(
        f"{open_server.url}/v1/models", headers=headers("anything", "x-api-key", "2023-06-01")
    )
    assert refused.status_code == 401
    with AdminClient(open_server.url) as admin:
        assert admin.requests()[-1]["status"] == 401  # journalled like any refused request
