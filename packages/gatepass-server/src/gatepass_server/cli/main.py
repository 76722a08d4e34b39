"""``gatepass-server``: serve, manage the schema, instances, machines and signing keys.

Admin commands work on the database directly (no running server needed) and print Rich
tables, or with ``--json`` the same JSON bodies the HTTP API returns.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from gatepass_server.config import Settings
from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.domain.machines import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    MAX_PREVIOUS_TOKEN_TTL,
    MAX_TOKEN_TTL,
    MIN_TOKEN_TTL,
    Machine,
    MachineListQuery,
    parse_order_by,
)
from gatepass_server.domain.tokens import (
    DEFAULT_TOKEN_LIST_LIMIT,
    MAX_TOKEN_LIST_LIMIT,
    M2MToken,
    TokenFormat,
    VerifyFailure,
    claims_problem,
)
from gatepass_server.errors import ConfigurationError, GatepassError
from gatepass_server.runtime import Runtime
from gatepass_server.services.auth import InstancePrincipal, MachinePrincipal
from gatepass_server.services.interfaces import TokenListQuery
from gatepass_server.web.wire import (
    M2MTokenListBody,
    MachineListBody,
    MachineScopeBody,
    MachineSecretKeyBody,
    machine_body,
    machine_created_body,
    scope_body,
    token_body,
    token_created_body,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from gatepass_server.services.tokens import CreatedToken

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="gatepass-server",
    help="Gatepass: self-hosted machine-to-machine authentication server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema: apply and check migrations.", no_args_is_help=True)
instances_app = typer.Typer(help="Instances (tenants) and their sk_ keys.", no_args_is_help=True)
machines_app = typer.Typer(help="Machines, their secret keys and scopes.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys of JWT-format M2M tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(instances_app, name="instances")
app.add_typer(machines_app, name="machines")
tokens_app = typer.Typer(
    help="M2M tokens: mint, list, inspect, verify, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(tokens_app, name="tokens")

out = Console()
err = Console(stderr=True)

# NOTE: help text is Rich markup: "[env: X]" unescaped is taken for a style tag and vanishes
# from --help, so every such hint is written "\\[env: X]".
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory \\[env: GATEPASS_DATA_DIR]", show_default=False
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="Database URL \\[env: GATEPASS_DATABASE_URL]", show_default=False
    ),
]
InstanceOpt = Annotated[
    str | None,
    typer.Option(
        "--instance", help="Instance id (default: the oldest instance)", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def main() -> None:
    """Console-script entry point."""
    app()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from None


def _run(settings: Settings, action: Callable[[Runtime], Awaitable[T]], *, check: bool = True) -> T:
    """Run one admin action against the database, then close it."""
    from gatepass_server.storage.schema import ensure_current  # noqa: PLC0415 - Alembic is heavy

    async def go() -> T:
        runtime = Runtime.build(settings)
        try:
            if check:
                await ensure_current(runtime.database)
            return await action(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(go())
    except GatepassError as exc:
        raise _fail(exc.long_message) from None


def _admin(
    action: Callable[[Runtime], Awaitable[T]],
    data_dir: Path | None,
    database_url: str | None,
) -> T:
    """Run an admin command's action with the common --data-dir/--database-url options."""
    return _run(_settings(data_dir=data_dir, database_url=database_url), action)


def _print_json(body: Any) -> None:
    sys.stdout.write(msgspec.json.encode(body).decode() + "\n")


# -- serve ------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="\\[env: GATEPASS_HOST] (default 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="\\[env: GATEPASS_PORT] (default 8080)")] = None,
    workers: Annotated[
        int | None, typer.Option(help="\\[env: GATEPASS_WORKERS] (default 1)")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    redis_url: Annotated[str | None, typer.Option(help="\\[env: GATEPASS_REDIS_URL]")] = None,
    master_key: Annotated[
        str | None,
        typer.Option(help="base64 of 32 bytes \\[env: GATEPASS_MASTER_KEY]", show_default=False),
    ] = None,
    bootstrap_secret_key: Annotated[
        str | None,
        typer.Option(help="\\[env: GATEPASS_BOOTSTRAP_SECRET_KEY]", show_default=False),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="\\[env: GATEPASS_LOG_LEVEL] (default info)")
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(help="Larger request bodies get 413 \\[env: GATEPASS_MAX_BODY_BYTES]"),
    ] = None,
    auth_failure_limit: Annotated[
        int | None,
        typer.Option(
            help="Key-authentication failures per source and per key, per minute; 0 turns it"
            " off \\[env: GATEPASS_AUTH_FAILURE_LIMIT] (default 60)",
        ),
    ] = None,
    verify_miss_limit: Annotated[
        int | None,
        typer.Option(
            help="Verify misses (404) per source and per caller, per minute; 0 turns it off"
            " \\[env: GATEPASS_VERIFY_MISS_LIMIT] (default 600)",
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Proxies whose X-Forwarded-For is trusted as the client address, comma"
            " separated, or * \\[env: GATEPASS_FORWARDED_ALLOW_IPS] (default 127.0.0.1)",
        ),
    ] = None,
) -> None:
    """Apply migrations, create the default instance on first start, and serve HTTP."""
    import uvicorn  # noqa: PLC0415 - only serve needs it

    from gatepass_server.observability import configure_logging  # noqa: PLC0415

    settings = _settings(
        host=host,
        port=port,
        workers=workers,
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        master_key=master_key,
        bootstrap_secret_key=bootstrap_secret_key,
        log_level=log_level,
        max_body_bytes=max_body_bytes,
        auth_failure_limit=auth_failure_limit,
        verify_miss_limit=verify_miss_limit,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    configure_logging(settings.log_level)
    bootstrap = _run(settings, lambda runtime: runtime.prepare(), check=False)
    if bootstrap is not None:
        out.print(f"Created the default instance [bold]{bootstrap.instance.id}[/].")
        if bootstrap.generated_secret_key is not None:
            out.print(
                "Its secret key is shown only this once; store it now:\n\n"
                f"    [bold green]{bootstrap.generated_secret_key}[/]\n",
                highlight=False,
            )
    # Worker processes build their own runtime from the environment: hand them the flags.
    env = {
        "GATEPASS_DATA_DIR": str(settings.data_dir),
        "GATEPASS_DATABASE_URL": settings.database_url,
        "GATEPASS_LOG_LEVEL": settings.log_level,
        "GATEPASS_MAX_BODY_BYTES": str(settings.max_body_bytes),
        "GATEPASS_AUTH_FAILURE_LIMIT": str(settings.auth_failure_limit),
        "GATEPASS_VERIFY_MISS_LIMIT": str(settings.verify_miss_limit),
    }
    if settings.master_key is not None:
        env["GATEPASS_MASTER_KEY"] = settings.master_key
    if settings.redis_url is not None:
        env["GATEPASS_REDIS_URL"] = settings.redis_url
    os.environ.update(env)
    out.print(f"Gatepass listening on http://{settings.host}:{settings.port}", highlight=False)
    sys.stdout.flush()
    uvicorn.run(
        "gatepass_server.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,  # NOTE: ours logs the path only; uvicorn's prints query strings
        server_header=False,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


# -- db -----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply every pending migration."""
    from gatepass_server.storage.schema import upgrade  # noqa: PLC0415

    status = _run(
        _settings(data_dir=data_dir, database_url=database_url),
        lambda runtime: upgrade(runtime.database),
        check=False,
    )
    out.print(f"Schema is at revision {status.current} (head {status.head}).")


@db_app.command("check")
def db_check(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Fail unless the database is at head and matches the code's tables exactly."""
    from gatepass_server.storage.schema import check_drift  # noqa: PLC0415

    diffs = _run(
        _settings(data_dir=data_dir, database_url=database_url),
        lambda runtime: check_drift(runtime.database),
        check=False,
    )
    if diffs:
        for diff in diffs:
            err.print(f"  drift: {diff}", highlight=False)
        raise _fail("the migrations do not produce the schema the code uses")
    out.print("Schema matches the code.")


# -- instances ----------------------------------------------------------------------------


@instances_app.command("list")
def instances_list(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, json: JsonOpt = False
) -> None:
    """List instances."""
    found = _run(
        _settings(data_dir=data_dir, database_url=database_url), lambda r: r.instances.list()
    )
    if json:
        _print_json([{"id": i.id, "name": i.name, "created_at": i.created_at} for i in found])
        return
    table = Table("id", "name", "created_at")
    for instance in found:
        table.add_row(instance.id, instance.name, str(instance.created_at))
    out.print(table)


@instances_app.command("create")
def instances_create(
    name: Annotated[str, typer.Argument(help="A name for people")],
    live: Annotated[
        bool, typer.Option("--live", help="Issue an sk_live_ key (default sk_test_)")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Create an instance; its secret key is printed once."""
    created = _run(
        _settings(data_dir=data_dir, database_url=database_url),
        lambda r: r.instances.create(name, live=live),
    )
    if json:
        _print_json({"id": created.instance.id, "name": name, "secret_key": created.secret_key})
        return
    out.print(f"Created instance {created.instance.id}; secret key (shown once):", highlight=False)
    out.print(f"    {created.secret_key}", highlight=False)


@instances_app.command("rotate-key")
def instances_rotate_key(
    instance_id: Annotated[str, typer.Argument(help="Instance id")],
    grace: Annotated[int, typer.Option(help="Seconds the old keys keep working", min=0)] = 0,
    live: Annotated[bool, typer.Option("--live", help="Issue an sk_live_ key")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Issue a new sk_ key; the old ones stop working after --grace seconds."""
    secret = _run(
        _settings(data_dir=data_dir, database_url=database_url),
        lambda r: r.instances.rotate_key(instance_id, grace_seconds=grace, live=live),
    )
    if json:
        _print_json({"id": instance_id, "secret_key": secret})
        return
    out.print(f"New secret key for {instance_id} (shown once):\n    {secret}", highlight=False)


@instances_app.command("generate-key")
def instances_generate_key(
    live: Annotated[
        bool, typer.Option("--live", help="An sk_live_ key (default sk_test_)")
    ] = False,
) -> None:
    """Print a new well-formed key, e.g. for GATEPASS_BOOTSTRAP_SECRET_KEY. Stores nothing."""
    sys.stdout.write(
        generate_secret(SecretKind.INSTANCE_LIVE if live else SecretKind.INSTANCE_TEST) + "\n"
    )


# -- machines -----------------------------------------------------------------------------


async def _instance(runtime: Runtime, instance_id: str | None) -> str:
    if instance_id is not None:
        return instance_id
    return (await runtime.instances.default()).id


def _machine_table(machines: list[Machine]) -> Table:
    table = Table("id", "name", "default_token_ttl", "scoped_machines", "created_at")
    for m in machines:
        scoped = ", ".join(s.id for s in m.scoped_machines) or "-"
        table.add_row(m.id, m.name, str(m.default_token_ttl), scoped, str(m.created_at))
    return table


def _show_machine(machine: Machine, *, json: bool) -> None:
    if json:
        _print_json(machine_body(machine))
    else:
        out.print(_machine_table([machine]))


@machines_app.command("list")
def machines_list(
    query: Annotated[str | None, typer.Option(help="Exact id or part of the name")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    order_by: Annotated[str, typer.Option(help="name or created_at, with +/-")] = "-created_at",
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """List machines."""
    order = parse_order_by(order_by)
    if order is None:
        raise _fail("--order-by must be name or created_at, optionally prefixed with + or -")

    async def action(r: Runtime) -> tuple[list[Machine], int]:
        listing = MachineListQuery(limit=limit, offset=offset, query=query, order_by=order)
        return await r.machines.list(await _instance(r, instance), listing)

    found, total = _admin(action, data_dir, database_url)
    if json:
        _print_json(MachineListBody([machine_body(m) for m in found], total))
        return
    out.print(_machine_table(found))
    out.print(f"{len(found)} of {total}")


@machines_app.command("create")
def machines_create(
    name: Annotated[str, typer.Argument()],
    scoped_machine: Annotated[
        list[str] | None,
        typer.Option("--scoped-machine", help="A machine this one may call (repeatable)"),
    ] = None,
    default_token_ttl: Annotated[int, typer.Option(min=MIN_TOKEN_TTL, max=MAX_TOKEN_TTL)] = 3600,
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Create a machine; its secret key is printed once."""

    async def action(r: Runtime) -> Any:
        return await r.machines.create(
            await _instance(r, instance),
            name=name,
            scoped_machine_ids=scoped_machine or [],
            default_token_ttl=default_token_ttl,
        )

    created = _admin(action, data_dir, database_url)
    if json:
        _print_json(machine_created_body(created.machine, created.secret_key))
        return
    out.print(_machine_table([created.machine]))
    out.print(f"Secret key (shown once): {created.secret_key}", highlight=False)


@machines_app.command("get")
def machines_get(
    machine_id: Annotated[str, typer.Argument()],
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Show one machine."""

    async def action(r: Runtime) -> Machine:
        return await r.machines.get(await _instance(r, instance), machine_id)

    _show_machine(_admin(action, data_dir, database_url), json=json)


@machines_app.command("update")
def machines_update(
    machine_id: Annotated[str, typer.Argument()],
    name: Annotated[str | None, typer.Option()] = None,
    default_token_ttl: Annotated[
        int | None, typer.Option(min=MIN_TOKEN_TTL, max=MAX_TOKEN_TTL)
    ] = None,
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Change a machine's name or default token TTL."""

    async def action(r: Runtime) -> Machine:
        return await r.machines.update(
            await _instance(r, instance),
            machine_id,
            name=name,
            default_token_ttl=default_token_ttl,
        )

    _show_machine(_admin(action, data_dir, database_url), json=json)


@machines_app.command("delete")
def machines_delete(
    machine_id: Annotated[str, typer.Argument()],
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Delete a machine, its scopes and keys."""

    async def action(r: Runtime) -> None:
        await r.machines.delete(await _instance(r, instance), machine_id)

    _admin(action, data_dir, database_url)
    if json:
        _print_json({"object": "machine", "id": machine_id, "deleted": True})
    else:
        out.print(f"Deleted {machine_id}.")


@machines_app.command("secret-key")
def machines_secret_key(
    machine_id: Annotated[str, typer.Argument()],
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Print a machine's current secret key."""

    async def action(r: Runtime) -> str:
        return await r.machines.secret_key(await _instance(r, instance), machine_id)

    secret = _admin(action, data_dir, database_url)
    if json:
        _print_json(MachineSecretKeyBody(secret=secret))
    else:
        sys.stdout.write(secret + "\n")


@machines_app.command("rotate-key")
def machines_rotate_key(
    machine_id: Annotated[str, typer.Argument()],
    previous_token_ttl: Annotated[
        int,
        typer.Option(help="Seconds the old key keeps working", min=0, max=MAX_PREVIOUS_TOKEN_TTL),
    ] = 0,
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Issue a new secret key for a machine."""

    async def action(r: Runtime) -> str:
        return await r.machines.rotate_secret_key(
            await _instance(r, instance),
            machine_id,
            previous_token_ttl=previous_token_ttl,
        )

    secret = _admin(action, data_dir, database_url)
    if json:
        _print_json(MachineSecretKeyBody(secret=secret))
    else:
        sys.stdout.write(secret + "\n")


@machines_app.command("scope-add")
def machines_scope_add(
    machine_id: Annotated[str, typer.Argument(help="The calling machine")],
    to_machine_id: Annotated[str, typer.Argument(help="The machine it may call")],
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Let one machine call another."""

    async def action(r: Runtime) -> MachineScopeBody:
        return scope_body(
            await r.machines.add_scope(await _instance(r, instance), machine_id, to_machine_id)
        )

    body = _admin(action, data_dir, database_url)
    if json:
        _print_json(body)
    else:
        out.print(f"{machine_id} may now call {to_machine_id}.")


@machines_app.command("scope-remove")
def machines_scope_remove(
    machine_id: Annotated[str, typer.Argument(help="The calling machine")],
    to_machine_id: Annotated[str, typer.Argument(help="The machine it may no longer call")],
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Stop one machine from calling another."""

    async def action(r: Runtime) -> None:
        await r.machines.remove_scope(await _instance(r, instance), machine_id, to_machine_id)

    _admin(action, data_dir, database_url)
    if json:
        _print_json(
            {
                "object": "machine_scope",
                "from_machine_id": machine_id,
                "to_machine_id": to_machine_id,
                "deleted": True,
            },
        )
    else:
        out.print(f"{machine_id} may no longer call {to_machine_id}.")


# -- keys ---------------------------------------------------------------------------------


@keys_app.command("rotate-signing")
def keys_rotate_signing(
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Make a new JWT signing key active; the old one stays in the JWKS while its tokens live."""

    async def action(r: Runtime) -> tuple[str, str]:
        instance_id = await _instance(r, instance)
        return instance_id, await r.signing.rotate(instance_id)

    instance_id, kid = _admin(action, data_dir, database_url)
    if json:
        _print_json({"instance_id": instance_id, "kid": kid})
    else:
        sys.stdout.write(kid + "\n")


# -- tokens -------------------------------------------------------------------------------


def _token_table(tokens: list[M2MToken], now_ms: int) -> Table:
    table = Table("id", "subject", "format", "scopes", "expiration", "state")
    for t in tokens:
        state = "revoked" if t.revoked else "expired" if t.expired(now_ms) else "live"
        table.add_row(
            t.id,
            t.subject,
            t.token_format.value,
            " ".join(t.scopes) or "-",
            str(t.expiration),
            state,
        )
    return table


def _show_token(runtime_now: int, token: M2MToken, *, json: bool) -> None:
    if json:
        _print_json(token_body(token, runtime_now))
    else:
        out.print(_token_table([token], runtime_now))


@tokens_app.command("create")
def tokens_create(
    machine_id: Annotated[str, typer.Argument(help="The machine the token is minted for")],
    jwt: Annotated[
        bool, typer.Option("--jwt", help="Mint a JWT instead of an opaque token")
    ] = False,
    seconds: Annotated[
        float | None,
        typer.Option(
            help="Lifetime in seconds (default: the machine's default_token_ttl)", min=0.001
        ),
    ] = None,
    claims: Annotated[str | None, typer.Option(help="Custom claims as a JSON object")] = None,
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Mint a token for a machine, as that machine would; the token is printed once."""
    parsed: dict[str, Any] | None = None
    if claims is not None:
        try:
            parsed = msgspec.json.decode(claims)
        except msgspec.DecodeError:
            raise _fail("--claims must be a JSON object") from None
        if not isinstance(parsed, dict):
            raise _fail("--claims must be a JSON object")
        if (problem := claims_problem(parsed)) is not None:
            raise _fail(problem[1])

    async def action(r: Runtime) -> tuple[CreatedToken, int]:
        caller = MachinePrincipal(await _instance(r, instance), machine_id)
        # NOTE: "Machine not found" here, not the API's machine_secret_key_invalid.
        await r.machines.get(caller.instance_id, machine_id)
        created = await r.tokens.create(
            caller,
            token_format=TokenFormat.JWT if jwt else TokenFormat.OPAQUE,
            seconds_until_expiration=seconds,
            claims=parsed,
            min_remaining_ttl_seconds=None,
        )
        return created, r.clock.now_ms()

    created, now = _admin(action, data_dir, database_url)
    if json:
        _print_json(token_created_body(created.token, created.secret, now))
        return
    out.print(_token_table([created.token], now))
    out.print(f"Token (shown once): {created.secret}", highlight=False)


@tokens_app.command("list")
def tokens_list(
    subject: Annotated[str, typer.Argument(help="The machine whose tokens to list")],
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked tokens")] = False,
    expired: Annotated[bool, typer.Option("--expired", help="Include expired tokens")] = False,
    limit: Annotated[int, typer.Option(min=1, max=MAX_TOKEN_LIST_LIMIT)] = DEFAULT_TOKEN_LIST_LIMIT,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """List a machine's tokens, newest first."""
    query = TokenListQuery(subject, revoked, expired, limit, offset)

    async def action(r: Runtime) -> tuple[list[M2MToken], int, int]:
        found, total = await r.tokens.list(InstancePrincipal(await _instance(r, instance)), query)
        return found, total, r.clock.now_ms()

    found, total, now = _admin(action, data_dir, database_url)
    if json:
        _print_json(M2MTokenListBody([token_body(t, now) for t in found], total))
        return
    out.print(_token_table(found, now))
    out.print(f"{len(found)} of {total}")


@tokens_app.command("get")
def tokens_get(
    token_id: Annotated[str, typer.Argument(help="mt_… token id")],
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Show one token's record."""

    async def action(r: Runtime) -> tuple[M2MToken, int]:
        caller = InstancePrincipal(await _instance(r, instance))
        return await r.tokens.get(caller, token_id), r.clock.now_ms()

    token, now = _admin(action, data_dir, database_url)
    _show_token(now, token, json=json)


@tokens_app.command("verify")
def tokens_verify(
    token: Annotated[str, typer.Argument(help="The bearer token (opaque mt_… or JWT)")],
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Verify a token as the instance would; exit 1 with the reason when it is not valid."""

    async def action(r: Runtime) -> tuple[M2MToken | None, VerifyFailure | None, int]:
        caller = InstancePrincipal(await _instance(r, instance))
        found, failure = await r.tokens.check(caller, token)
        return found, failure, r.clock.now_ms()

    found, failure, now = _admin(action, data_dir, database_url)
    if failure is not None or found is None:
        reason = (failure or VerifyFailure.UNKNOWN).value
        raise _fail(f"token is not valid: {reason}")
    _show_token(now, found, json=json)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="mt_… token id")],
    reason: Annotated[str | None, typer.Option(help="Why (kept from the first revocation)")] = None,
    instance: InstanceOpt = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json: JsonOpt = False,
) -> None:
    """Revoke a token (opaque or JWT) by id."""

    async def action(r: Runtime) -> tuple[M2MToken, int]:
        caller = InstancePrincipal(await _instance(r, instance))
        return await r.tokens.revoke(caller, token_id, reason), r.clock.now_ms()

    token, now = _admin(action, data_dir, database_url)
    _show_token(now, token, json=json)
