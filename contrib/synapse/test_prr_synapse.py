"""Unit tests of prr_synapse.PrrDoorCheck against a fake ModuleApi and a fake prr.

Run with the Synapse venv's Python (the Rust test `cli/tests/cli/synapse_module.rs` does, so
`scripts/test.sh` runs them):

    target/synapse-venv/bin/python -m unittest discover -s contrib/synapse -v

The fake ModuleApi records the callbacks the module registers; its HTTP client stands for
`prr serve`: it records each request and answers what the test programmed (an answer, an
exception, or nothing until the test says so); its delayed calls run on a Twisted
`task.Clock` that the test advances, so that timeouts need no waiting.
"""

import logging
import unittest
from typing import Any, Dict, List, Optional

from twisted.internet import defer, task

from synapse.api.errors import HttpResponseException
from synapse.module_api import NOT_SPAM
from synapse.module_api.errors import Codes, ConfigError

import prr_synapse
from prr_synapse import NO_ANSWER, NO_REASON, PrrDoorCheck

URL = "http://127.0.0.1:9999"
TOKEN = "s3cret-token-value"


class FakePrr:
    """The fake http client: `post_json_get_json` as Synapse's SimpleHttpClient has it."""

    def __init__(self) -> None:
        self.requests: List[Dict[str, Any]] = []
        # What the next requests get: a value, an exception, or a Deferred fired later.
        self.answer: Any = {"allow": True}
        self.cancelled = 0

    async def post_json_get_json(
        self, uri: str, post_json: Any, headers: Optional[Dict] = None
    ) -> Any:
        self.requests.append({"uri": uri, "body": post_json, "headers": headers})
        answer = self.answer
        if isinstance(answer, defer.Deferred):
            try:
                return await answer
            except defer.CancelledError:
                self.cancelled += 1
                raise
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeApi:
    """The parts of ModuleApi the module uses."""

    def __init__(self) -> None:
        self.http_client = FakePrr()
        self.clock = task.Clock()
        self.callbacks: Dict[str, Any] = {}

    def register_spam_checker_callbacks(self, **callbacks: Any) -> None:
        self.callbacks.update(callbacks)

    def delayed_background_call(self, msec: float, f: Any, *args: Any, desc=None, **kw):
        return self.clock.callLater(msec / 1000.0, f, *args, **kw)


def module(**config: Any) -> "tuple[PrrDoorCheck, FakeApi]":
    api = FakeApi()
    m = PrrDoorCheck(PrrDoorCheck.parse_config({"url": URL, **config}), api)
    return m, api


def run(coroutine: Any) -> defer.Deferred:
    return defer.ensureDeferred(coroutine)


def result(d: defer.Deferred) -> Any:
    """The result of a Deferred that must have fired."""
    out: List[Any] = []
    d.addBoth(out.append)
    assert out, "the check has not answered"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


REFUSAL = {
    "allow": False,
    "instance": "@mod:example.org",
    "rule": {
        "room_id": "!list:example.org",
        "kind": "user",
        "state_key": "rule:@spam*:example.org",
        "entity": "@spam*:example.org",
        "match": "glob",
        "recommendation": "m.ban",
        "reason": "spam wave",
    },
    "user_id": "@spammer:example.org",
}


class ParseConfig(unittest.TestCase):
    def test_defaults(self) -> None:
        c = PrrDoorCheck.parse_config({"url": URL + "/"})
        self.assertEqual(c.url, URL)
        self.assertIsNone(c.api_token)
        self.assertEqual(c.timeout_ms, 500)
        self.assertTrue(c.fail_open)

    def test_every_key(self) -> None:
        c = PrrDoorCheck.parse_config(
            {"url": URL, "api_token": TOKEN, "timeout_ms": 80, "fail_open": False}
        )
        self.assertEqual((c.api_token, c.timeout_ms, c.fail_open), (TOKEN, 80, False))
        self.assertNotIn(TOKEN, repr(c))

    def test_bad_configs_are_refused_with_what_is_wrong(self) -> None:
        cases = [
            (None, "`url`"),
            ({}, "`url`"),
            ([], "mapping"),
            ({"url": 5}, "`url`"),
            ({"url": "127.0.0.1:8080"}, "http:// or https://"),
            ({"url": "ftp://host"}, "http:// or https://"),
            ({"url": URL + "?x=1"}, "without query"),
            ({"url": URL, "timeout": 5}, "unknown config key(s) timeout"),
            ({"url": URL, "timeout_ms": 0}, "`timeout_ms`"),
            ({"url": URL, "timeout_ms": -5}, "`timeout_ms`"),
            ({"url": URL, "timeout_ms": "500"}, "`timeout_ms`"),
            ({"url": URL, "timeout_ms": True}, "`timeout_ms`"),
            ({"url": URL, "timeout_ms": 1.5}, "`timeout_ms`"),
            ({"url": URL, "fail_open": "no"}, "`fail_open`"),
            ({"url": URL, "api_token": ""}, "`api_token`"),
            ({"url": URL, "api_token": 12345}, "`api_token`"),
        ]
        for config, message in cases:
            with self.subTest(config=config):
                with self.assertRaises(ConfigError) as e:
                    PrrDoorCheck.parse_config(config)
                self.assertIn(message, str(e.exception))
                self.assertNotIn("12345", str(e.exception))


class Checks(unittest.TestCase):
    def test_registers_join_and_invite(self) -> None:
        m, api = module()
        self.assertEqual(
            api.callbacks,
            {"user_may_join_room": m.user_may_join_room, "user_may_invite": m.user_may_invite},
        )

    def test_join_allowed_asks_the_join_check(self) -> None:
        m, api = module()
        got = result(run(m.user_may_join_room("@a:hs", "!r:hs", False)))
        self.assertEqual(got, NOT_SPAM)
        self.assertEqual(
            api.http_client.requests,
            [
                {
                    "uri": URL + "/v1/check/join",
                    "body": {"user_id": "@a:hs", "room_id": "!r:hs"},
                    "headers": {},
                }
            ],
        )

    def test_invite_asks_the_invite_check_with_the_token(self) -> None:
        m, api = module(api_token=TOKEN)
        got = result(run(m.user_may_invite("@a:hs", "@b:hs", "!r:hs")))
        self.assertEqual(got, NOT_SPAM)
        (request,) = api.http_client.requests
        self.assertEqual(request["uri"], URL + "/v1/check/invite")
        self.assertEqual(
            request["body"], {"inviter": "@a:hs", "invitee": "@b:hs", "room_id": "!r:hs"}
        )
        self.assertEqual(request["headers"], {b"Authorization": [b"Bearer " + TOKEN.encode()]})

    def test_refusals_carry_the_rules_reason(self) -> None:
        for fail_open in (True, False):
            m, api = module(fail_open=fail_open)
            api.http_client.answer = REFUSAL
            for d in (
                run(m.user_may_join_room("@spammer:example.org", "!r:hs", True)),
                run(m.user_may_invite("@a:hs", "@spammer:example.org", "!r:hs")),
            ):
                self.assertEqual(result(d), (Codes.FORBIDDEN, {"error": "spam wave"}))

    def test_a_refusal_without_a_reason_says_a_rule_refused(self) -> None:
        m, api = module()
        for rule in ({**REFUSAL["rule"], "reason": None}, {**REFUSAL["rule"], "reason": " "}):
            api.http_client.answer = {**REFUSAL, "rule": rule}
            got = result(run(m.user_may_join_room("@s:hs", "!r:hs", False)))
            self.assertEqual(got, (Codes.FORBIDDEN, {"error": NO_REASON}))
        del api.http_client.answer["rule"]
        got = result(run(m.user_may_join_room("@s:hs", "!r:hs", False)))
        self.assertEqual(got, (Codes.FORBIDDEN, {"error": NO_REASON}))

    def test_an_answer_in_time_is_used_and_the_timer_cancelled(self) -> None:
        m, api = module(timeout_ms=500)
        pending: defer.Deferred = defer.Deferred()
        api.http_client.answer = pending
        d = run(m.user_may_join_room("@s:hs", "!r:hs", False))
        api.clock.advance(0.499)
        self.assertFalse(d.called)
        pending.callback(REFUSAL)
        self.assertEqual(result(d), (Codes.FORBIDDEN, {"error": "spam wave"}))
        self.assertEqual(api.clock.getDelayedCalls(), [])
        self.assertEqual(api.http_client.cancelled, 0)


class NoAnswer(unittest.TestCase):
    """Timeouts, connection errors, HTTP errors and bodies that are not a check's answer:
    `fail_open` decides, and the module says so in a warning that never shows the token."""

    def failures(self) -> List[Any]:
        return [
            ConnectionRefusedError("Connection refused"),
            HttpResponseException(401, "Unauthorized", b'{"error":"bad token"}'),
            HttpResponseException(500, "Internal Server Error", b""),
            ValueError("not JSON"),
            {"allowed": True},
            {"allow": "yes"},
            [True],
            None,
        ]

    def check(self, fail_open: bool, answer: Any) -> Any:
        m, api = module(api_token=TOKEN, fail_open=fail_open)
        api.http_client.answer = answer
        with self.assertLogs(prr_synapse.logger, logging.WARNING) as logs:
            got = result(run(m.user_may_join_room("@a:hs", "!r:hs", False)))
        self.assertIn("prr did not answer", logs.output[0])
        self.assertIn("@a:hs", logs.output[0])
        self.assertNotIn(TOKEN, "\n".join(logs.output))
        return got

    def test_fail_open_lets_users_in(self) -> None:
        for answer in self.failures():
            with self.subTest(answer=answer):
                self.assertEqual(self.check(True, answer), NOT_SPAM)

    def test_fail_closed_refuses(self) -> None:
        for answer in self.failures():
            with self.subTest(answer=answer):
                self.assertEqual(
                    self.check(False, answer), (Codes.FORBIDDEN, {"error": NO_ANSWER})
                )

    def test_timeouts_cancel_the_request_then_fail_open_or_closed(self) -> None:
        for fail_open, want in ((True, NOT_SPAM), (False, (Codes.FORBIDDEN, {"error": NO_ANSWER}))):
            with self.subTest(fail_open=fail_open):
                m, api = module(timeout_ms=250, fail_open=fail_open)
                api.http_client.answer = defer.Deferred()
                with self.assertLogs(prr_synapse.logger, logging.WARNING) as logs:
                    d = run(m.user_may_invite("@a:hs", "@b:hs", "!r:hs"))
                    api.clock.advance(0.249)
                    self.assertFalse(d.called)
                    api.clock.advance(0.001)
                    self.assertEqual(result(d), want)
                self.assertEqual(api.http_client.cancelled, 1)
                self.assertIn("within 250 ms", logs.output[0])


if __name__ == "__main__":
    unittest.main()
