"""The permission rules and the auth file, without a server: every request type has a rule, token
hashes verify only their token, and a bad auth file is refused with its reason.

Method: ``rights.RULES`` against ``protocol.REQUEST_TYPES``; real scrypt hashes; auth files
written to a temporary directory with the modes and contents an operator could get wrong.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from beanraft import protocol as p
from beanraft.node import principals, rights
from beanraft.node.config import ConfigError


def test_every_request_type_has_a_permission_rule():
    assert set(rights.RULES) == set(p.REQUEST_TYPES)


def test_every_admin_command_needs_the_administer_right():
    assert all(rights.RULES[kind][1] == "administer" for kind in p.ADMIN_REQUEST_TYPES)


def test_a_hash_verifies_its_token_and_no_other():
    stored = principals.StoredHash.parse(principals.hash_token("s3cret", n=2**10))
    assert stored.matches("s3cret")
    assert not stored.matches("s3cret ") and not stored.matches("S3cret")
    assert "s3cret" not in principals.hash_token("s3cret", n=2**10)


def write(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "auth.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.parametrize("text, reason", [
    ("[principal.a]\nproduce = ['x']\n", "needs token-hash or tls-subject"),
    ("[principal.a]\ntoken-hash = 'plain-token'\n", "not a scrypt"),
    ("[principal.a]\ntls-subject = 'CN=a'\nproduce = 'x'\n", "must be a list"),
    ("[principal.a]\ntls-subject = 'CN=a'\nread = ['x']\n", "unknown keys"),
    ("[principal.'a b']\ntls-subject = 'CN=a'\n", "a name is"),
    ("[principal.admin-token]\ntls-subject = 'CN=a'\n", "--admin-token-file"),
    ("[principal.a]\ntls-subject = 'CN=a'\n[principal.b]\ntls-subject = 'CN=a'\n", "same tls-subject"),
    ("[principal.a\n", "not TOML"),
    ("[users.a]\n", r"expected \[principal.<name>\]"),
])
def test_a_bad_auth_file_is_refused_with_its_reason(tmp_path, text, reason):
    with pytest.raises(ConfigError, match=reason):
        principals.load_auth_file(write(tmp_path, text))


def test_an_auth_file_others_may_read_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="chmod 600"):
        principals.load_auth_file(write(tmp_path, "[principal.a]\ntls-subject = 'CN=a'\n", 0o644))


def test_patterns_are_exact_names_or_globs():
    worker = principals.Principal("w", consume=("orders", "mail-*"))
    assert worker.may("consume", "orders") and worker.may("consume", "mail-eu")
    assert not worker.may("consume", "orders2") and not worker.may("consume", "Mail-eu")
    assert not worker.may("produce", "orders") and worker.may_see("mail-x")


def test_the_table_of_failing_addresses_keeps_at_most_its_bound_and_forgets_the_oldest(caplog):
    """A flood of failed authentications from more addresses than the table holds: the table
    stays at MAX_TRACKED_PEERS, the addresses that failed longest ago lose their back-off, the
    latest keep theirs, and every failure is still counted."""
    auth = principals.Authenticator(None, admin_token="not-this-one")
    bound = principals.MAX_TRACKED_PEERS
    addresses = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(bound + 500)]
    with caplog.at_level("ERROR", logger="beanraft"):  # one WARNING line per failure otherwise
        for address in addresses:
            auth.failed(None, address)
    assert len(auth._peers) == bound
    assert auth.failures == bound + 500
    assert all(auth._wait_s(address) == 0.0 for address in addresses[:500])  # forgotten
    assert all(auth._wait_s(address) > 0.0 for address in addresses[-100:])  # still slowed


def test_attempts_in_parallel_from_one_address_take_turns_one_back_off_apart(monkeypatch, caplog):
    """After a failure, the attempts one address makes at once on many connections are checked
    one back-off apart, as attempts one after another would be: more connections are no faster
    way to guess. (The waits are sleeps: they can only run longer on a loaded machine.)"""
    monkeypatch.setattr(principals, "FAIL_DELAY_S", 0.2)
    monkeypatch.setattr(principals, "FAIL_DELAY_MAX_S", 0.2)
    auth = principals.Authenticator(None, admin_token="not-this-one")
    checked: list[float] = []
    bearer = auth.bearer
    monkeypatch.setattr(auth, "bearer", lambda header: checked.append(time.monotonic()) or bearer(header))
    attempts = 6

    async def guesses():
        auth.failed(None, "10.0.0.1")
        began = time.monotonic()
        answers = await asyncio.gather(*(auth.authenticate_bearer(f"Bearer guess{i}", "10.0.0.1")
                                         for i in range(attempts)))
        return began, answers

    with caplog.at_level("ERROR", logger="beanraft"):
        began, answers = asyncio.run(guesses())
    assert answers == [None] * attempts and len(checked) == attempts
    checked.sort()
    # The k-th is checked no sooner than k + 1 back-offs after the failure (lower bounds only).
    assert all(at - began >= (k + 1) * 0.2 - 0.01 for k, at in enumerate(checked)), \
        [round(at - began, 3) for at in checked]
    assert auth._wait_s("10.0.0.2") == 0.0  # another address waits for nothing


def test_an_attempt_given_up_while_it_waits_gives_its_turn_back_unchecked(monkeypatch, caplog):
    """A client that hangs up while its attempt waits for its turn (``Guard.abandon`` cancels
    it): the attempt is never checked and the next one from the address does not wait for it."""
    auth = principals.Authenticator(None, admin_token="not-this-one")
    checked: list[str] = []
    monkeypatch.setattr(auth, "bearer", checked.append)

    async def scenario():
        auth.failed(None, "10.0.0.3")
        attempt = asyncio.ensure_future(auth.authenticate_bearer("Bearer x", "10.0.0.3"))
        await asyncio.sleep(0.01)
        assert auth._peers["10.0.0.3"][2] == 1  # waiting for its turn
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        assert auth._peers["10.0.0.3"][2] == 0

    with caplog.at_level("ERROR", logger="beanraft"):
        asyncio.run(scenario())
    assert checked == []
