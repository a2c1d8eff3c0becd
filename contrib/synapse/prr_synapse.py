"""Checks at the door: a Synapse module that asks ``prr serve`` whether a user may come in.

Synapse loads it as a spam-checker module (``contrib/synapse`` on Synapse's Python path)::

    modules:
      - module: prr_synapse.PrrDoorCheck
        config:
          url: http://127.0.0.1:8080     # the base URL of `prr serve`
          api_token: "..."               # optional: prr serve's --api-token-file content
          timeout_ms: 500                # optional (default 500): how long to wait for prr
          fail_open: true                # optional (default true): let users in when prr
                                         # does not answer (false: refuse them)

It registers two callbacks:

* ``user_may_join_room(user_id, room_id, is_invited)`` asks ``POST /v1/check/join``
  ``{"user_id", "room_id"}``;
* ``user_may_invite(inviter, invitee, room_id)`` asks ``POST /v1/check/invite``
  ``{"inviter", "invitee", "room_id"}``.

prr answers ``{"allow": true}`` or ``{"allow": false, "instance", "rule": {..., "reason"},
"user_id"}``: the module lets the join or invite through (``NOT_SPAM``) or refuses it, and
Synapse answers the client 403 ``M_FORBIDDEN`` whose ``error`` is the rule's reason.

When prr does not answer in time (``timeout_ms``), cannot be reached, or answers something
else than a check's answer (an HTTP error such as 401 for a wrong token, a body without a
boolean ``allow``), the module logs a warning and lets the user in (``fail_open: true``) or
refuses with 403 ``M_FORBIDDEN`` (``fail_open: false``).

Synapse does not call these callbacks for server admins (they bypass the module, as they
bypass every spam checker) nor for the creator's own join of a room it just created. The API
token is sent in the ``Authorization`` header only; it is never logged.
"""

import logging
from typing import Any, Dict, Literal, Optional, Tuple, Union
from urllib.parse import urlsplit

from synapse.module_api import (
    NOT_SPAM,
    ModuleApi,
    make_deferred_yieldable,
    run_in_background,
)
from synapse.module_api.errors import Codes, ConfigError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 500

# What a callback returns: let the user through, or refuse with an error code and the fields
# merged into the client's error body.
Verdict = Union[Literal["NOT_SPAM"], Tuple[Codes, Dict[str, Any]]]

# The `error` of a refusal whose rule has no reason, and of one made because prr did not
# answer (`fail_open: false`).
NO_REASON = "Refused by a moderation policy rule"
NO_ANSWER = "The moderation service did not answer; try again later"


class PrrConfig:
    """The module's validated configuration (see :meth:`PrrDoorCheck.parse_config`)."""

    def __init__(
        self, url: str, api_token: Optional[str], timeout_ms: int, fail_open: bool
    ) -> None:
        self.url = url
        self.api_token = api_token
        self.timeout_ms = timeout_ms
        self.fail_open = fail_open

    def __repr__(self) -> str:
        # Never shows the token.
        token = "<set>" if self.api_token is not None else None
        return (
            f"PrrConfig(url={self.url!r}, api_token={token}, "
            f"timeout_ms={self.timeout_ms}, fail_open={self.fail_open})"
        )


class PrrUnanswered(Exception):
    """prr did not give a check's answer: timeout, connection error, HTTP error, bad body."""


class PrrDoorCheck:
    """The module: see the module's documentation."""

    def __init__(self, config: PrrConfig, api: ModuleApi) -> None:
        self._config = config
        self._api = api
        self._headers: Dict[bytes, list] = {}
        if config.api_token is not None:
            self._headers[b"Authorization"] = [
                b"Bearer " + config.api_token.encode("utf-8")
            ]
        api.register_spam_checker_callbacks(
            user_may_join_room=self.user_may_join_room,
            user_may_invite=self.user_may_invite,
        )
        logger.info("prr door checks: %r", config)

    @staticmethod
    def parse_config(config: Dict[str, Any]) -> PrrConfig:
        """Validates the ``config`` block of the module's entry in ``homeserver.yaml``.

        Raises ``ConfigError`` (Synapse then refuses to start, showing the message) when a key
        is unknown, ``url`` is missing or not an ``http(s)://host[:port][/path]`` URL,
        ``api_token`` is not a non-empty string, ``timeout_ms`` is not a positive integer or
        ``fail_open`` is not a boolean.
        """
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ConfigError("prr_synapse: the module's config must be a mapping")
        known = {"url", "api_token", "timeout_ms", "fail_open"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(
                f"prr_synapse: unknown config key(s) {', '.join(map(str, unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )

        url = config.get("url")
        if not isinstance(url, str) or not url:
            raise ConfigError(
                "prr_synapse: `url` (the base URL of `prr serve`, e.g. "
                "http://127.0.0.1:8080) is required"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"prr_synapse: `url` must be an http:// or https:// URL, not {url!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigError(
                f"prr_synapse: `url` must be a base URL without query or fragment: {url!r}"
            )

        api_token = config.get("api_token")
        if api_token is not None and (not isinstance(api_token, str) or not api_token):
            # The value is not shown: it may be a secret in the wrong shape.
            raise ConfigError("prr_synapse: `api_token` must be a non-empty string")

        timeout_ms = config.get("timeout_ms", DEFAULT_TIMEOUT_MS)
        if (
            isinstance(timeout_ms, bool)
            or not isinstance(timeout_ms, int)
            or timeout_ms <= 0
        ):
            raise ConfigError(
                "prr_synapse: `timeout_ms` must be a positive integer (milliseconds), "
                f"not {timeout_ms!r}"
            )

        fail_open = config.get("fail_open", True)
        if not isinstance(fail_open, bool):
            raise ConfigError(
                f"prr_synapse: `fail_open` must be true or false, not {fail_open!r}"
            )

        return PrrConfig(url.rstrip("/"), api_token, timeout_ms, fail_open)

    async def user_may_join_room(
        self, user_id: str, room_id: str, is_invited: bool
    ) -> Verdict:
        """Synapse's ``user_may_join_room``: asks ``/v1/check/join``."""
        return await self._check(
            "join", {"user_id": user_id, "room_id": room_id}, f"{user_id} joining"
        )

    async def user_may_invite(
        self, inviter_userid: str, invitee_userid: str, room_id: str
    ) -> Verdict:
        """Synapse's ``user_may_invite``: asks ``/v1/check/invite``."""
        return await self._check(
            "invite",
            {"inviter": inviter_userid, "invitee": invitee_userid, "room_id": room_id},
            f"{inviter_userid} inviting {invitee_userid}",
        )

    async def _check(self, check: str, body: Dict[str, str], what: str) -> Verdict:
        room_id = body["room_id"]
        try:
            answer = await self._ask(check, body)
        except PrrUnanswered as e:
            if self._config.fail_open:
                logger.warning(
                    "prr door check: %s %s let in: prr did not answer (%s)",
                    what,
                    room_id,
                    e,
                )
                return NOT_SPAM
            logger.warning(
                "prr door check: %s %s refused: prr did not answer (%s)",
                what,
                room_id,
                e,
            )
            return Codes.FORBIDDEN, {"error": NO_ANSWER}
        if answer["allow"]:
            return NOT_SPAM
        rule = answer.get("rule")
        rule = rule if isinstance(rule, dict) else {}
        reason = rule.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            reason = NO_REASON
        logger.info(
            "prr door check: %s %s refused by %s: %s rule %s (%s)",
            what,
            room_id,
            answer.get("instance"),
            rule.get("kind"),
            rule.get("state_key"),
            reason,
        )
        return Codes.FORBIDDEN, {"error": reason}

    async def _ask(self, check: str, body: Dict[str, str]) -> Dict[str, Any]:
        """POSTs ``body`` to ``/v1/check/<check>`` and returns the answer, a JSON object with a
        boolean ``allow``. Raises :class:`PrrUnanswered` otherwise, and when no answer came
        within ``timeout_ms`` (the request is then cancelled)."""
        uri = f"{self._config.url}/v1/check/{check}"
        request = run_in_background(
            self._api.http_client.post_json_get_json, uri, body, headers=self._headers
        )
        timed_out = []

        def time_out() -> None:
            if not request.called:
                timed_out.append(True)
                request.cancel()

        timer = self._api.delayed_background_call(
            self._config.timeout_ms, time_out, desc="prr_door_check_timeout"
        )
        try:
            answer = await make_deferred_yieldable(request)
        except Exception as e:
            if timed_out:
                raise PrrUnanswered(
                    f"no answer from {uri} within {self._config.timeout_ms} ms"
                ) from None
            raise PrrUnanswered(f"{uri}: {type(e).__name__}: {e}") from None
        finally:
            if timer.active():
                timer.cancel()
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            raise PrrUnanswered(f"{uri}: not a check's answer: {str(answer)[:200]}")
        return answer
