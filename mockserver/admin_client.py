"""`AdminClient`: the admin API from Python (the pytest plugin and `mockserver admin` use it)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx


class AdminError(Exception):
    """The admin API refused a call; `status` and the API's `message` say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class AdminClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_admin/health")

    def settings(self) -> dict[str, Any]:
        return self._call("GET", "/_admin/settings")

    def configure(self, patch: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
        """Patch live settings, e.g. `configure(timing={"time_scale": 100})`; all or nothing."""
        return self._call("PATCH", "/_admin/settings", json={**(patch or {}), **changes})

    def reset(self) -> None:
        self._call("POST", "/_admin/reset")

    def requests(self, **filters: Any) -> list[dict[str, Any]]:
        params = {
            k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in filters.items() if v is not None
        }
        return self._call("GET", "/_admin/requests", params=params)["data"]

    def journal(self, **filters: Any) -> dict[str, Any]:
        return self._call("GET", "/_admin/requests", params={k: str(v) for k, v in filters.items()})

    def clear_requests(self) -> int:
        return int(self._call("DELETE", "/_admin/requests")["deleted"])

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_admin/faults")["data"]

    def add_fault(self, fault: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        return self._call("POST", "/_admin/faults", json={**(fault or {}), **fields})

    def delete_fault(self, name: str) -> None:
        self._call("DELETE", f"/_admin/faults/{name}")

    def usage(self, **params: Any) -> dict[str, Any]:
        return self._call("GET", "/_admin/usage", params={k: str(v) for k, v in params.items()})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise AdminError(response.status_code, message)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Scripted replies: what the next matching POST /v1/messages gets (see mockserver/scripted.py).

    def add_replies(self, *entries: dict[str, Any]) -> list[dict[str, Any]]:
        """Queue entries after those already queued, answered in order, e.g.
        `add_replies({"error": {"status": 429}}, {"text": "Hello"})`; returns them with their ids."""
        return self._call("POST", "/_admin/replies", json={"replies": list(entries)})["data"]

    def replies(self) -> list[dict[str, Any]]:
        """Every entry since the last clear or reset, with `used` and `remaining` (None: unlimited)."""
        return self._call("GET", "/_admin/replies")["data"]

    def clear_replies(self) -> int:
        return int(self._call("DELETE", "/_admin/replies")["deleted"])
