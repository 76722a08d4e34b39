"""The OpenAPI document: checked in, current, complete, valid, and served as is."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import schemathesis
from web_support import SQLITE_ONLY, assert_api_headers

from gatepass_server.app import _handlers
from gatepass_server.web import openapi, system

if TYPE_CHECKING:
    import httpx

DOCUMENT_PATH: Final = Path(openapi.__file__).with_name(openapi.DOCUMENT_FILE)
REGENERATE: Final = ".venv/bin/python -m gatepass_server.web.openapi --write"
METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def _checked_in() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT_PATH.read_bytes())
    return document


def _operations(document: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Each operation by id: ``(method, path, operation)``."""
    return {
        op["operationId"]: (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_checked_in_document_is_what_the_generator_writes() -> None:
    """``openapi.json`` is byte for byte the generator's output: change a route, regenerate."""
    expected = openapi.render(openapi.build_document())
    assert DOCUMENT_PATH.read_bytes() == expected, (
        f"{DOCUMENT_PATH.name} is out of date; regenerate it with: {REGENERATE}"
    )


def test_generator_writes_the_file_with_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--write`` rewrites the file beside the module; without it the document is printed."""
    target = tmp_path / "web" / "openapi.py"
    target.parent.mkdir()
    monkeypatch.setattr(openapi, "__file__", str(target))
    assert openapi.main(["--write"]) == 0
    assert (target.parent / openapi.DOCUMENT_FILE).read_bytes() == openapi.render(
        openapi.build_document()
    )


def test_generator_prints_the_document_without_write(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """Without ``--write`` the document goes to stdout and no file changes."""
    before = DOCUMENT_PATH.stat().st_mtime_ns
    assert openapi.main([]) == 0
    assert capsysbinary.readouterr().out == openapi.render(openapi.build_document())
    assert DOCUMENT_PATH.stat().st_mtime_ns == before


def test_document_lists_exactly_the_routes_the_app_serves() -> None:
    """Every (method, path) of the app is documented and nothing else is (HEAD aside)."""
    served = {(m, path) for path, handlers in _handlers().items() for m in handlers}
    documented = {(m, path) for m, path, _ in _operations(_checked_in()).values()}
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_document_is_valid_openapi_that_schemathesis_loads() -> None:
    """It validates against the OpenAPI 3.1 meta-schema and every operation builds."""
    schema = schemathesis.openapi.from_path(DOCUMENT_PATH)
    schema.validate()
    operations = list(schema.get_all_operations())
    assert all(result.ok() for result in operations)
    assert len(operations) == len(_operations(_checked_in()))


def test_every_keyed_operation_documents_401_429_and_503_with_retry_after() -> None:
    """A key can be wrong (401), rate limited (429) or unverifiable (503), on every route."""
    document = _checked_in()
    for operation_id, (_, _, op) in _operations(document).items():
        if not op["security"]:
            continue
        for status in ("401", "429", "503"):
            assert status in op["responses"], (operation_id, status)
        for status in ("429", "503"):
            headers = _resolve(document, op["responses"][status])["headers"]
            assert "Retry-After" in headers, (operation_id, status)


def test_every_response_uses_the_error_envelope_or_a_success_schema() -> None:
    """Each 4xx/5xx is the Clerk envelope with exactly one error, with the codes it can carry."""
    document = _checked_in()
    errors = document["components"]["schemas"]["Errors"]
    assert errors["required"] == ["errors", "clerk_trace_id"]
    assert errors["properties"]["errors"]["maxItems"] == 1
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["message", "long_message", "code", "meta"]
    for operation_id, (_, _, op) in _operations(document).items():
        for status, response in op["responses"].items():
            body = _resolve(document, response)
            media = body["content"]
            if int(status) >= 400:
                schema = media["application/json"]["schema"]
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/Errors"}, operation_id
                codes = schema["allOf"][1]["properties"]["errors"]["items"]["properties"]
                assert codes["code"]["enum"], (operation_id, status)
            for name in ("X-Request-Id", "Cache-Control", "X-Content-Type-Options"):
                assert name in body["headers"], (operation_id, status, name)


def test_field_error_status_follows_the_route_family() -> None:
    """Field errors are 422 on /machines and 400 on /m2m_tokens (CONTRACT.md §5)."""
    for operation_id, (_, path, op) in _operations(_checked_in()).items():
        refs = {r.get("$ref", "").rsplit("/", 1)[-1] for r in op["responses"].values()}
        if "/m2m_tokens" in path and "requestBody" in op:
            assert "TokenBadRequest" in refs, operation_id
            assert "UnprocessableEntity" not in refs, operation_id
        if "/machines" in path and "requestBody" in op:
            assert "UnprocessableEntity" in refs, operation_id
            assert "TokenBadRequest" not in refs, operation_id


def test_every_link_names_an_operation_and_its_parameters() -> None:
    """Links point at real operation ids of the same prefix family, with parameters they take."""
    document = _checked_in()
    operations = _operations(document)
    links = 0
    for operation_id, (_, _, op) in operations.items():
        for response in op["responses"].values():
            for name, link in _resolve(document, response).get("links", {}).items():
                links += 1
                target_id = link["operationId"]
                assert target_id in operations, (operation_id, name)
                assert target_id.endswith("WithoutPrefix") == operation_id.endswith(
                    "WithoutPrefix"
                ), (operation_id, name)
                target = operations[target_id][2]
                taken = {f"{p['in']}.{p['name']}" for p in target.get("parameters", [])}
                assert set(link.get("parameters", {})) <= taken, (operation_id, name)
                if "requestBody" in link:
                    assert "requestBody" in target, (operation_id, name)
                for expression in [*link.get("parameters", {}).values()]:
                    assert re.fullmatch(r"\$response\.body#/[\w/]+", expression), expression
    assert links >= 20


def test_machine_and_token_creation_link_to_their_follow_ups() -> None:
    """Stateful walks start from create, by id (and the token string for verify).

    Machine → get, update, delete, scopes, secret key; token → get, revoke, verify.
    """
    document = _checked_in()
    operations = _operations(document)
    machine_links = operations["createMachine"][2]["responses"]["200"]["links"]
    assert {link["operationId"] for link in machine_links.values()} >= {
        "getMachine",
        "updateMachine",
        "deleteMachine",
        "createMachineScope",
        "getMachineSecretKey",
        "rotateMachineSecretKey",
    }
    token_links = operations["createM2MToken"][2]["responses"]["201"]["links"]
    assert token_links["GetM2MToken"]["parameters"] == {"path.token_id": "$response.body#/id"}
    assert token_links["RevokeM2MToken"]["parameters"] == {"path.token_id": "$response.body#/id"}
    assert token_links["VerifyM2MToken"]["requestBody"] == {"token": "$response.body#/token"}


def test_success_statuses_are_the_sdks() -> None:
    """200 for POST /machines and 201 for POST /m2m_tokens: the Python SDK checks exactly."""
    operations = _operations(_checked_in())
    assert set(operations["createMachine"][2]["responses"]) & {"200", "201"} == {"200"}
    assert set(operations["createM2MToken"][2]["responses"]) & {"200", "201"} == {"201"}


def test_response_schemas_require_every_wire_key() -> None:
    """Every key of a wire struct is required, nulls included (CONTRACT.md §3)."""
    schemas = _checked_in()["components"]["schemas"]
    token = schemas["M2MToken"]
    for key in ("revocation_reason", "expiration", "last_used_at", "claims"):
        assert key in token["required"]
    assert token["properties"]["object"] == {"type": "string", "const": "machine_to_machine_token"}
    assert "token" in schemas["M2MTokenCreated"]["required"]
    assert "scoped_machines" in schemas["Machine"]["required"]
    assert "scoped_machines" not in schemas["MachineSummary"]["properties"]
    assert schemas["Machine"]["additionalProperties"] is False


@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/v1/openapi.json", "/openapi.json"])
async def test_openapi_is_served_without_a_key_from_the_checked_in_file(
    client: httpx.AsyncClient, path: str
) -> None:
    """200, exactly ``application/json``, the file's bytes; no ``Authorization`` needed."""
    response = await client.get(path)
    assert response.status_code == 200
    assert_api_headers(response)
    assert response.content == DOCUMENT_PATH.read_bytes()
    assert response.content == system.openapi_document()
