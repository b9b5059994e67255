"""Webhook endpoint rules: secrets, the SSRF guard on receiver URLs, event-type patterns, signatures."""

from __future__ import annotations

import base64
import socket
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier.webhooks import (
    check_url,
    new_secret,
    pattern_problem,
    private_addresses_allowed,
    signature_headers,
    url_problem,
)
from shared.messaging.topology import topic_matches


class TestSecrets:
    def test_a_secret_is_whsec_and_base64_of_at_least_24_random_bytes(self):
        secret = new_secret()
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24

    def test_every_secret_is_new(self):
        assert len({new_secret() for _ in range(50)}) == 50

    def test_a_standard_webhooks_library_accepts_the_secret(self):
        Webhook(new_secret())


class TestUrlsRefused:
    @pytest.mark.parametrize("url, kind", [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.1/hook", "loopback"),  # the resolver's shorthand for 127.0.0.1
        ("http://localhost:8080/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://172.16.0.9/hook", "private"),
        ("https://172.31.255.1/hook", "private"),
        ("https://192.168.1.20/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address (cloud metadata)"),
        ("http://169.254.10.1/", "link-local"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://[::1]/hook", "loopback"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[fc00::1]/hook", "private"),
        ("http://[fd12:3456::1]/hook", "private"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://[::ffff:169.254.169.254]/hook", "cloud metadata"),
        ("http://[2002:a00:1::]/hook", "private"),  # 6to4 around 10.0.0.1
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::]/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://240.0.0.1/hook", "reserved"),
        ("http://192.0.2.10/hook", "private"),  # documentation range: not routable
    ])
    def test_a_url_on_a_non_public_address_is_refused_with_the_kind_named(self, url, kind):
        problem = url_problem(url, allow_private=False)
        assert problem is not None
        assert kind in problem
        assert "SSRF protection" in problem

    @pytest.mark.parametrize("url, words", [
        ("ftp://93.184.216.34/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://93.184.216.34/", "http or https"),
        ("https://user:pw@93.184.216.34/hook", "user information"),
        ("https://token@93.184.216.34/hook", "user information"),
        ("https:///hook", "no host"),
        ("https://93.184.216.34:0/hook", "port 0"),
        ("https://93.184.216.34:99999/hook", "not a valid URL"),
        ("https://93.184.216.34/a\x00b", "control characters"),
        ("https://93.184.216.34/a b", "without spaces"),
        ("https://93.184.216.34/\r\nX-Injected: 1", "control characters"),
        ("https://例子.测试/hook", "punycode"),
    ])
    def test_a_url_of_the_wrong_shape_is_refused(self, url, words):
        assert words in url_problem(url, allow_private=True)

    def test_a_host_resolving_to_one_private_address_among_public_ones_is_refused(self, monkeypatch):
        def resolve(host, port, *args, **kwargs):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("93.184.216.34", "10.0.0.7")]

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        problem = url_problem("https://receiver.partner.test/hook", allow_private=False)
        assert "10.0.0.7" in problem and "private" in problem

    def test_a_host_that_does_not_resolve_is_refused_as_a_temporary_problem(self, monkeypatch):
        def resolve(*args, **kwargs):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        check = check_url("https://nowhere.partner.test/hook")
        assert "could not be resolved" in check.problem
        assert check.temporary

    def test_a_resolver_that_hangs_is_given_up_on_within_the_timeout(self, monkeypatch):
        def resolve(*args, **kwargs):
            time.sleep(2)
            return []

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        started = time.monotonic()
        check = check_url("https://slow-dns.partner.test/hook", resolve_timeout=0.2)
        assert time.monotonic() - started < 1.5
        assert "within 0.2 s" in check.problem


class TestUrlsAccepted:
    @pytest.mark.parametrize("url", [
        "https://93.184.216.34/hooks/refstd",
        "http://93.184.216.34:8080/hook?token=abc",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        "https://[::ffff:93.184.216.34]/hook",
    ])
    def test_a_url_on_a_public_ip_literal_is_accepted_without_dns(self, url, monkeypatch):
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("no DNS for a literal"))
        assert url_problem(url, allow_private=False) is None

    def test_a_host_resolving_only_to_public_addresses_is_accepted_and_pinned(self, monkeypatch):
        def resolve(host, port, *args, **kwargs):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))] * 2

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        check = check_url("https://receiver.partner.test:8443/in?x=1#frag")
        assert check.problem is None
        assert check.addresses == ("93.184.216.34",)
        assert (check.host, check.port, check.host_header, check.target) == (
            "receiver.partner.test", 8443, "receiver.partner.test:8443", "/in?x=1")

    @pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "http://localhost/hook", "http://10.0.0.5/",
                                     "http://[::1]:9000/", "http://169.254.169.254/"])
    def test_allowing_private_addresses_accepts_loopback_and_private_receivers(self, url):
        assert url_problem(url, allow_private=True) is None

    def test_allowing_private_addresses_still_refuses_unspecified_and_multicast(self):
        assert "unspecified" in url_problem("http://0.0.0.0/", allow_private=True)
        assert "multicast" in url_problem("http://[ff02::1]/", allow_private=True)

    def test_the_allowance_comes_from_the_settings_else_from_the_environment(self, monkeypatch):
        class WithField:
            webhook_allow_private = True

        monkeypatch.delenv("WEBHOOK_ALLOW_PRIVATE", raising=False)
        assert private_addresses_allowed(WithField()) is True
        assert private_addresses_allowed(object()) is False
        monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
        assert private_addresses_allowed(object()) is True
        monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "false")
        assert private_addresses_allowed(None) is False


class TestPatterns:
    @pytest.mark.parametrize("pattern", [
        "refstd.scheduler.booking.*", "refstd.scheduler.booking.confirmed", "refstd.scheduler.#",
        "refstd.*.*.*", "refstd.#", "refstd.inventory.instrument.verified", "refstd.scheduler.recalibration.due_soon",
        "refstd.*.booking.#", "refstd.scheduler.#.cancelled",
    ])
    def test_a_well_formed_pattern_is_accepted(self, pattern):
        assert pattern_problem(pattern) is None

    @pytest.mark.parametrize("pattern, words", [
        ("", "non-empty"),
        ("scheduler.booking.*", "start with refstd."),
        ("refstd.billing.invoice.paid", "name a service"),
        ("refstd.scheduler.booking*", "stand alone"),
        ("refstd.scheduler.*booking.confirmed", "stand alone"),
        ("refstd.scheduler..confirmed", "none empty"),
        ("refstd.scheduler.booking.", "none empty"),
        ("refstd.scheduler.Booking.confirmed", "lower-case"),
        ("refstd.scheduler.booking.confirmed.extra", "matches no event type"),
        ("refstd.scheduler.booking", "matches no event type"),
        ("refstd.scheduler.booking.>", "stand alone"),
        ("refstd.scheduler.booking.\x00", "stand alone"),
    ])
    def test_a_malformed_pattern_is_refused_with_the_reason(self, pattern, words):
        assert words in pattern_problem(pattern)

    @pytest.mark.parametrize("pattern, event_type, expected", [
        ("refstd.scheduler.booking.*", "refstd.scheduler.booking.confirmed", True),
        ("refstd.scheduler.booking.*", "refstd.scheduler.recalibration.due_soon", False),
        ("refstd.scheduler.#", "refstd.scheduler.booking.confirmed", True),
        ("refstd.#", "refstd.inventory.instrument.verified", True),
        ("refstd.*.*.*", "refstd.inventory.instrument.verified", True),
        ("refstd.inventory.*.*", "refstd.scheduler.booking.confirmed", False),
        ("refstd.scheduler.#.cancelled", "refstd.scheduler.booking.cancelled", True),
        ("refstd.scheduler.#.cancelled", "refstd.scheduler.booking.confirmed", False),
        ("refstd.scheduler.booking.confirmed", "refstd.scheduler.booking.confirmed", True),
        ("refstd.scheduler.booking.confirmed", "refstd.scheduler.booking.rejected", False),
    ])
    def test_patterns_match_event_types_as_amqp_topics(self, pattern, event_type, expected):
        assert pattern_problem(pattern) is None
        assert topic_matches(pattern, event_type) is expected


class TestSignatures:
    def test_signed_headers_verify_with_the_standard_webhooks_library(self):
        secret = new_secret()
        body = '{"id":"evt-1","data":{"name":"质子交换膜"}}'.encode()
        headers = signature_headers(secret, "evt-1", body, int(time.time()))
        assert headers["webhook-id"] == "evt-1"
        assert headers["webhook-signature"].startswith("v1,")
        assert Webhook(secret).verify(body, headers) == {"id": "evt-1", "data": {"name": "质子交换膜"}}

    def test_a_changed_body_or_another_secret_does_not_verify(self):
        secret = new_secret()
        headers = signature_headers(secret, "evt-1", b'{"a":1}', int(time.time()))
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(b'{"a":2}', headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(b'{"a":1}', headers)
