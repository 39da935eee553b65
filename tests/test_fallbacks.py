"""`fallbacks` (server-side fallback beta, reference §4.1) validated as the API does, through the SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest

FALLBACK_BETA = "server-side-fallback-2026-07-01"
FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]


def create(client, model="claude-opus-5", betas=(FALLBACK_BETA,), **kwargs):
    return client.beta.messages.create(
        model=model, max_tokens=16, messages=HELLO, betas=list(betas), **kwargs
    )


def refused(client, **kwargs) -> str:
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(client, **kwargs)
    assert caught.value.type == "invalid_request_error"
    return caught.value.api_message


@pytest.mark.parametrize(
    "fallbacks",
    [
        "default",
        [{"model": "claude-opus-4-8"}],
        [
            {"model": "claude-opus-4-8", "max_tokens": 100, "speed": None, "output_config": None},
            {
                "model": "claude-sonnet-5",
                "thinking": {"type": "disabled"},
                "output_config": {"effort": "low"},
            },
        ],
    ],
)
def test_both_shapes_are_accepted_with_the_beta(client, fallbacks):
    message = create(client, fallbacks=fallbacks)
    assert message.model == "claude-opus-5" and message.usage.output_tokens > 0


def test_default_on_a_model_without_fallbacks_runs_the_model_alone(client):
    assert create(client, model="claude-haiku-4-5", fallbacks="default").usage.output_tokens > 0


def test_an_array_on_a_model_without_fallbacks_is_a_400(client):
    message = refused(client, model="claude-haiku-4-5", fallbacks=[{"model": "claude-opus-4-8"}])
    assert message.startswith("fallbacks: model claude-haiku-4-5 does not support a list of fallback models")


@pytest.mark.parametrize("fallbacks", ["default", [{"model": "claude-opus-4-8"}]])
def test_fallbacks_need_the_beta_header(client, fallbacks):
    message = refused(client, betas=(), fallbacks=fallbacks)
    assert message.startswith(f"fallbacks: requires the `anthropic-beta: {FALLBACK_BETA}` header")


def test_the_earlier_beta_date_is_accepted_too(client):
    assert create(client, betas=("server-side-fallback-2026-06-01",), fallbacks="default").content


def test_fallbacks_with_a_fallback_credit_token_is_a_400(client):
    message = refused(client, fallbacks="default", fallback_credit_token="fct_abc")
    assert message.startswith("fallbacks: cannot be combined with `fallback_credit_token`")


@pytest.mark.parametrize(
    ("fallbacks", "expected"),
    [
        ("best", "fallbacks: Input should be 'default'"),
        (
            {"model": "claude-opus-4-8"},
            'fallbacks: Input should be "default" or an array of fallback entries',
        ),
        ([{"max_tokens": 10}], "fallbacks.0.model: Field required"),
        (
            [{"model": "claude-opus-4-8", "temperature": 0.5}],
            "fallbacks.0.temperature: Extra inputs are not permitted",
        ),
        ([{"model": "claude-opus-4-8", "speed": "turbo"}], "fallbacks.0.speed: "),
        (
            [{"model": "claude-opus-4-8"}, {"model": "claude-nope"}],
            "fallbacks.1.model: unknown model 'claude-nope'",
        ),
        (
            [{"model": "claude-sonnet-5", "speed": "fast"}],
            'fallbacks.0.speed: model claude-sonnet-5 does not support speed "fast"',
        ),
        ([{"model": "claude-opus-4-8", "max_tokens": 10**7}], "fallbacks.0.max_tokens: 10000000 > "),
    ],
)
def test_malformed_fallbacks_name_the_field(server, fallbacks, expected):
    # Sent raw: the SDK's types would not let most of these through.
    response = httpx.post(
        f"{server.url}/v1/messages",
        headers={"x-api-key": "sk-test", "anthropic-version": "2023-06-01", "anthropic-beta": FALLBACK_BETA},
        json={"model": "claude-opus-5", "max_tokens": 16, "messages": HELLO, "fallbacks": fallbacks},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(expected), body["error"]["message"]


def test_a_fast_entry_needs_the_fast_beta_like_a_request_would(client):
    fallbacks = [{"model": "claude-opus-4-7", "speed": "fast"}]
    message = refused(client, fallbacks=fallbacks)
    assert message.startswith(
        f"fallbacks.0.speed: model claude-opus-4-7 requires the `anthropic-beta: {FAST_BETA}`"
    )
    assert create(client, betas=(FALLBACK_BETA, FAST_BETA), fallbacks=fallbacks).content


def test_the_catalog_says_which_models_take_an_array(start_server):
    # A config row (`[[models]]` with `fallbacks = true`) lets a model of the user's choice take one.
    server = start_server(models=[{"id": "claude-haiku-4-5", "display_name": "Haiku", "fallbacks": True}])
    client = anthropic.Anthropic(api_key="sk-fallbacks", base_url=server.url, max_retries=0)
    message = create(client, model="claude-haiku-4-5", fallbacks=[{"model": "claude-opus-4-8"}])
    assert message.usage.output_tokens > 0
    assert refused(client, model="claude-opus-4-7", fallbacks=[{"model": "claude-opus-4-8"}]).startswith(
        "fallbacks: model claude-opus-4-7 does not support"
    )


def test_an_entry_inherits_the_requests_max_tokens_and_is_checked_with_it(client):
    # claude-haiku-4-5 allows 64,000 output tokens: a chain entry without its own max_tokens would
    # run with the request's 100,000.
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.messages.create(
            model="claude-opus-5",
            max_tokens=100_000,
            messages=HELLO,
            betas=[FALLBACK_BETA],
            fallbacks=[{"model": "claude-haiku-4-5"}],
            timeout=30,  # a max_tokens this large needs stream=True or an explicit timeout in the SDK
        )
    assert caught.value.api_message.startswith(
        "fallbacks.0.max_tokens: 100000 (the request's max_tokens, which it inherits) > 64000"
    )
