"""Which organisation an API key belongs to, and the limits that organisation has (pure).

Every key is its own organisation unless the settings group keys; `Runtime.organization` keeps the
answers for as long as its settings live, because building the limit table was a measurable part
of every request.
"""

from __future__ import annotations

from dataclasses import dataclass

from mockserver.journal import api_key_id
from mockserver.limits.policy import LimitTable
from mockserver.settings import LimitSettings, OrganizationSettings, Settings


@dataclass(frozen=True, slots=True)
class Organization:
    name: str
    fast_mode: bool
    limits: LimitTable


def organization_for(api_key: str, settings: Settings) -> Organization:
    for name, org in settings.organizations.items():
        if api_key in org.keys:
            return Organization(name, org.fast_mode, _table(settings.limits, org))
    # By default every key is an organisation of its own, named by its digest (never the key).
    return Organization(api_key_id(api_key), True, _table(settings.limits, None))


def _table(defaults: LimitSettings, org: OrganizationSettings | None) -> LimitTable:
    names = (
        "requests_per_minute",
        "input_tokens_per_minute",
        "output_tokens_per_minute",
        "fast_input_tokens_per_minute",
        "fast_output_tokens_per_minute",
    )
    values = {name: getattr(defaults, name) for name in names}
    if org is not None:
        values.update({name: getattr(org, name) for name in names if getattr(org, name) is not None})
    return LimitTable(**values)
