"""Where a client's keys and URL come from, what is refused, and what never shows in a repr."""

from __future__ import annotations

import dataclasses
from typing import Final

import pytest
from test_sdk_models import MACHINE_CREATED_JSON, TOKEN_CREATED_JSON

from gatepass import (
    AsyncGatepass,
    ConfigurationError,
    Gatepass,
    M2MToken,
    Machine,
    MachineSecretKey,
)
from gatepass._config import DEFAULT_API_URL, Config

SK_ARG: Final = "sk_test_" + "1" * 38
SK_GATEPASS: Final = "sk_live_" + "2" * 38
SK_CLERK: Final = "sk_test_" + "3" * 38
AK_ARG: Final = "ak_" + "1" * 40
AK_GATEPASS: Final = "ak_" + "2" * 40
AK_CLERK: Final = "ak_" + "3" * 40

# (argument, GATEPASS_* variable, CLERK_* variable, the three values, the resolved field)
SETTINGS: Final = [
    (
        "secret_key",
        "GATEPASS_SECRET_KEY",
        "CLERK_SECRET_KEY",
        (SK_ARG, SK_GATEPASS, SK_CLERK),
    ),
    (
        "machine_secret_key",
        "GATEPASS_MACHINE_SECRET_KEY",
        "CLERK_MACHINE_SECRET_KEY",
        (AK_ARG, AK_GATEPASS, AK_CLERK),
    ),
    (
        "api_url",
        "GATEPASS_API_URL",
        "CLERK_API_URL",
        ("http://argument:1", "http://gatepass-env:2", "http://clerk-env:3"),
    ),
]


def resolve(
    environ: dict[str, str],
    *,
    secret_key: str | None = None,
    machine_secret_key: str | None = None,
    api_url: str | None = None,
) -> Config:
    """``Config.resolve`` as a client calls it, on the environment ``environ``."""
    return Config.resolve(
        secret_key=secret_key,
        machine_secret_key=machine_secret_key,
        api_url=api_url,
        environ=environ,
    )


@pytest.mark.parametrize(("argument", "gatepass_var", "clerk_var", "values"), SETTINGS)
def test_argument_beats_gatepass_env_beats_clerk_env(
    argument: str, gatepass_var: str, clerk_var: str, values: tuple[str, str, str]
) -> None:
    """Each setting: the argument, else ``GATEPASS_*``, else ``CLERK_*``."""
    from_arg, from_gatepass, from_clerk = values
    both = {gatepass_var: from_gatepass, clerk_var: from_clerk}
    assert getattr(resolve(both, **{argument: from_arg}), argument) == from_arg
    assert getattr(resolve(both), argument) == from_gatepass
    assert getattr(resolve({clerk_var: from_clerk}), argument) == from_clerk


@pytest.mark.parametrize(("argument", "gatepass_var", "clerk_var", "values"), SETTINGS)
@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_blank_values_are_not_given(
    argument: str, gatepass_var: str, clerk_var: str, values: tuple[str, str, str], blank: str
) -> None:
    """A blank variable or an empty argument falls through to the next source."""
    _, from_gatepass, from_clerk = values
    assert getattr(resolve({gatepass_var: blank, clerk_var: from_clerk}), argument) == from_clerk
    assert (
        getattr(resolve({gatepass_var: from_gatepass}, **{argument: ""}), argument) == from_gatepass
    )


def test_nothing_given_is_no_keys_and_the_default_url() -> None:
    """With no arguments and an empty environment: no keys, the local default server."""
    config = resolve({"GATEPASS_SECRET_KEY": " ", "CLERK_API_URL": ""})
    assert config == Config(secret_key=None, machine_secret_key=None, api_url=DEFAULT_API_URL)
    assert DEFAULT_API_URL == "http://127.0.0.1:8080"


def test_environment_values_are_stripped() -> None:
    """A trailing newline from a secrets file does not end up in the header."""
    config = resolve({"CLERK_SECRET_KEY": f" {SK_CLERK}\n", "CLERK_API_URL": " http://h:1/v1/\n"})
    assert (config.secret_key, config.api_url) == (SK_CLERK, "http://h:1")


@pytest.mark.parametrize("client_class", [Gatepass, AsyncGatepass])
def test_clients_read_the_process_environment(
    client_class: type[Gatepass | AsyncGatepass], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both clients resolve from ``os.environ`` when built without arguments."""
    monkeypatch.setenv("CLERK_SECRET_KEY", SK_CLERK)
    monkeypatch.setenv("GATEPASS_MACHINE_SECRET_KEY", AK_GATEPASS)
    monkeypatch.setenv("CLERK_API_URL", "https://clerk-style.example/v1")
    client = client_class()
    assert (client.has_secret_key, client.has_machine_secret_key) == (True, True)
    assert client.api_url == "https://clerk-style.example"
    assert client._config.secret_key == SK_CLERK
    assert client._config.machine_secret_key == AK_GATEPASS

    monkeypatch.delenv("CLERK_SECRET_KEY")
    monkeypatch.delenv("GATEPASS_MACHINE_SECRET_KEY")
    monkeypatch.delenv("CLERK_API_URL")
    bare = client_class()
    assert (bare.has_secret_key, bare.has_machine_secret_key) == (False, False)
    assert bare.api_url == DEFAULT_API_URL


@pytest.mark.parametrize(
    "secret_key",
    [AK_ARG, "pk_test_" + "x" * 30, "sk_" + "x" * 30, "Bearer " + SK_ARG, "SK_TEST_" + "x" * 30],
)
def test_instance_slot_refuses_other_kinds(secret_key: str) -> None:
    """Only ``sk_live_``/``sk_test_`` go in ``secret_key``; the key is not echoed."""
    with pytest.raises(ConfigurationError) as raised:
        resolve({}, secret_key=secret_key)
    assert str(raised.value) == "secret_key must be an instance secret key (sk_live_…/sk_test_…)"
    with pytest.raises(ConfigurationError):
        resolve({"CLERK_SECRET_KEY": secret_key})
    with pytest.raises(ConfigurationError):
        Gatepass(secret_key=secret_key)


@pytest.mark.parametrize("machine_secret_key", [SK_ARG, "mt_" + "x" * 40, "AK_" + "x" * 40])
def test_machine_slot_refuses_other_kinds(machine_secret_key: str) -> None:
    """Only ``ak_`` goes in ``machine_secret_key``; the key is not echoed."""
    with pytest.raises(ConfigurationError) as raised:
        resolve({}, machine_secret_key=machine_secret_key)
    assert str(raised.value) == "machine_secret_key must be a machine secret key (ak_…)"
    with pytest.raises(ConfigurationError):
        resolve({"GATEPASS_MACHINE_SECRET_KEY": machine_secret_key})
    with pytest.raises(ConfigurationError):
        AsyncGatepass(machine_secret_key=machine_secret_key)


@pytest.mark.parametrize("api_url", ["127.0.0.1:8080", "ftp://h", "gatepass.test", "//h/v1"])
def test_url_must_be_http(api_url: str) -> None:
    """A URL without an http(s) scheme is refused, from an argument or the environment."""
    with pytest.raises(ConfigurationError, match="api_url must be an http"):
        resolve({}, api_url=api_url)
    with pytest.raises(ConfigurationError):
        resolve({"GATEPASS_API_URL": api_url})


@pytest.mark.parametrize(
    ("api_url", "expected"),
    [
        ("http://h:1", "http://h:1"),
        ("http://h:1/", "http://h:1"),
        ("http://h:1/v1", "http://h:1"),
        ("http://h:1/v1/", "http://h:1"),
        ("https://h/base/v1//", "https://h/base"),
        ("https://h/v10", "https://h/v10"),
    ],
)
def test_url_is_normalised_to_the_root(api_url: str, expected: str) -> None:
    """Trailing slashes and a final ``/v1`` are dropped: the SDK adds ``/v1`` per route."""
    assert resolve({}, api_url=api_url).api_url == expected


def test_secrets_are_not_in_reprs() -> None:
    """Config, Machine, M2MToken and MachineSecretKey keep their secrets out of ``repr``."""
    config = resolve({}, secret_key=SK_ARG, machine_secret_key=AK_ARG)
    assert repr(config) == "Config(api_url='http://127.0.0.1:8080')"
    machine = Machine.from_json(MACHINE_CREATED_JSON)
    token = M2MToken.from_json(TOKEN_CREATED_JSON)
    secret = MachineSecretKey(secret=AK_ARG)
    assert machine.secret_key is not None
    assert token.token is not None
    for value, hidden in (
        (config, SK_ARG),
        (config, AK_ARG),
        (machine, machine.secret_key),
        (token, token.token),
        (secret, AK_ARG),
    ):
        assert hidden not in repr(value)
        assert hidden not in str(value)
    assert repr(secret) == "MachineSecretKey()"
    assert "secret_key" not in repr(machine)
    assert "token=" not in repr(token)
    assert f"id='{token.id}'" in repr(token)  # the rest is still there to debug with
    with Gatepass(secret_key=SK_ARG, machine_secret_key=AK_ARG) as client:
        assert SK_ARG not in repr(client)
        assert SK_ARG not in repr(client.machines)


def test_secrets_still_compare_and_copy() -> None:
    """Hidden from ``repr`` only: equality and ``replace`` still see the secret."""
    token = M2MToken.from_json(TOKEN_CREATED_JSON)
    assert token != dataclasses.replace(token, token=None)
    assert MachineSecretKey(secret=AK_ARG) != MachineSecretKey(secret=AK_CLERK)
