"""The OpenAPI 3.1 document of the HTTP API: every route, status, body and the error envelope.

Response schemas are the msgspec wire structs (``web/wire.py``, ``web/jwks.py``,
``web/system.py``) turned into JSON Schema, then tightened to what the encoder really
writes: every key present, fixed values as ``const``, no other keys. Request bodies and
query parameters are written out here from the same constants the handlers check, so a
bound changes in one place.

The document is generated here, checked in beside this module as ``openapi.json`` and
served from that file (``GET /v1/openapi.json``). After changing a route, regenerate it::

    .venv/bin/python -m gatepass_server.web.openapi --write

and ``tests/server/web/test_web_openapi.py`` fails until the file matches.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from gatepass_server.domain.machines import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_TOKEN_TTL,
    MAX_LIST_LIMIT,
    MAX_NAME_LENGTH,
    MAX_PREVIOUS_TOKEN_TTL,
    MAX_SCOPED_MACHINES,
    MAX_TOKEN_TTL,
    MIN_TOKEN_TTL,
)
from gatepass_server.domain.tokens import (
    DEFAULT_TOKEN_LIST_LIMIT,
    MAX_REVOCATION_REASON_LENGTH,
    MAX_TOKEN_LIST_LIMIT,
    RESERVED_CLAIMS,
    TokenFormat,
)
from gatepass_server.services.revocations import (
    DEFAULT_FEED_LIMIT,
    MAX_FEED_LIMIT,
    MAX_WAIT_SECONDS,
)
from gatepass_server.web import jwks, system, wire

__all__ = ["DOCUMENT_FILE", "build_document", "main", "render"]

DOCUMENT_FILE: Final = system.OPENAPI_FILE
"""The checked-in document, beside this module (package data)."""

_MAX_OFFSET: Final = 2**62  # the handlers' bound on offset and after
_SCHEMAS: Final = "#/components/schemas/"
_BEARER_FIELD: Final = "token"
"""The create response's and the verify body's field that holds the bearer string."""
_ID_PATTERNS: Final = {
    "ins": "^ins_[0-9A-Za-z]{27}$",
    "mch": "^mch_[0-9A-Za-z]{27}$",
    "mt": "^mt_[0-9a-f]{32}$",
}
"""Id patterns by prefix: instances, machines, tokens (CONTRACT.md §1)."""
_NOT_BLANK: Final = r"\S"
"""At least one non-whitespace character (the handlers refuse blank text)."""

# -- response schemas from the wire structs -------------------------------------------------

_WIRE_STRUCTS: Final[tuple[type[msgspec.Struct], ...]] = (
    wire.MachineBody,
    wire.MachineCreatedBody,
    wire.MachineListBody,
    wire.MachineDeletedBody,
    wire.MachineSecretKeyBody,
    wire.MachineScopeBody,
    wire.MachineScopeDeletedBody,
    wire.M2MTokenBody,
    wire.M2MTokenCreatedBody,
    wire.M2MTokenListBody,
    wire.M2MTokenRevocationsBody,
    wire.ErrorsBody,
    jwks.JwksBody,
    system.StatusBody,
)

# What the wire types cannot say: id formats, non-negative times, the TTL bounds.
_REFINEMENTS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "MachineSummary": {
        "id": {"pattern": _ID_PATTERNS["mch"]},
        "instance_id": {"pattern": _ID_PATTERNS["ins"]},
        "name": {"minLength": 1, "maxLength": MAX_NAME_LENGTH},
        "created_at": {"minimum": 0},
        "updated_at": {"minimum": 0},
        "default_token_ttl": {"minimum": MIN_TOKEN_TTL, "maximum": MAX_TOKEN_TTL},
    },
    "MachineCreated": {"secret_key": {"pattern": "^ak_[0-9A-Za-z]+$"}},
    "MachineDeleted": {"id": {"pattern": _ID_PATTERNS["mch"]}},
    "MachineSecretKey": {"secret": {"pattern": "^ak_[0-9A-Za-z]+$"}},
    "MachineScope": {
        "from_machine_id": {"pattern": _ID_PATTERNS["mch"]},
        "to_machine_id": {"pattern": _ID_PATTERNS["mch"]},
        "created_at": {"minimum": 0},
    },
    "MachineScopeDeleted": {
        "from_machine_id": {"pattern": _ID_PATTERNS["mch"]},
        "to_machine_id": {"pattern": _ID_PATTERNS["mch"]},
    },
    "M2MToken": {
        "id": {"pattern": _ID_PATTERNS["mt"]},
        "subject": {"pattern": _ID_PATTERNS["mch"]},
        "created_at": {"minimum": 0},
        "updated_at": {"minimum": 0},
    },
    "M2MTokenCreated": {"token": {"minLength": 1}},
    "M2MTokenRevocation": {
        "id": {"pattern": _ID_PATTERNS["mt"]},
        "subject": {"pattern": _ID_PATTERNS["mch"]},
    },
    "MachineList": {"total_count": {"minimum": 0}},
    "M2MTokenList": {"total_count": {"minimum": 0}},
    "M2MTokenRevocations": {"cursor": {"pattern": "^[0-9]+$"}},
    "Errors": {
        "errors": {"minItems": 1, "maxItems": 1},
        "clerk_trace_id": {"pattern": "^[0-9a-f]{32}$"},
    },
    "Status": {"status": {"const": "ok"}},
    "Jwks": {
        "keys": {
            "items": {
                "type": "object",
                "required": ["kty", "kid", "alg", "use", "n", "e"],
                "additionalProperties": False,
                "properties": {
                    "kty": {"const": "RSA"},
                    "kid": {"type": "string", "minLength": 1},
                    "alg": {"const": "RS256"},
                    "use": {"const": "sig"},
                    "n": {"type": "string", "minLength": 1},
                    "e": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}

# The inherited structs repeat their parents' fields: refine them the same way.
_REFINED_LIKE: Final = {
    "Machine": "MachineSummary",
    "MachineCreated": "MachineSummary",
    "M2MTokenCreated": "M2MToken",
}


def _component_name(struct_name: str) -> str:
    return struct_name.removesuffix("Body")


def _rename_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _rename_refs(value) for key, value in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMAS):
            out["$ref"] = _SCHEMAS + _component_name(ref.removeprefix(_SCHEMAS))
        return out
    if isinstance(node, list):
        return [_rename_refs(item) for item in node]
    return node


def _exact(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Tighten one struct's schema to what msgspec's encoder writes."""
    schema = {key: value for key, value in schema.items() if key != "title"}
    properties: dict[str, dict[str, Any]] = schema["properties"]
    for prop in properties.values():
        # NOTE: a default on a wire struct is a fixed value ("object", "deleted"): the
        # encoder always writes it, so it is the constant of that key, not a default.
        if "default" in prop:
            prop["const"] = prop.pop("default")
    for source in (_REFINED_LIKE.get(name), name):
        for prop_name, extra in _REFINEMENTS.get(source or "", {}).items():
            if prop_name in properties:
                properties[prop_name].update(extra)
    # NOTE: every key is always present, null included (CONTRACT.md §3), and no others.
    schema["required"] = list(properties)
    schema["additionalProperties"] = False
    return schema


def _response_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_WIRE_STRUCTS, ref_template=_SCHEMAS + "{name}")
    renamed = {_component_name(name): _rename_refs(body) for name, body in components.items()}
    schemas = {name: _exact(name, body) for name, body in sorted(renamed.items())}
    # NOTE: an error always carries exactly one entry; meta holds param_name for a field.
    schemas["Errors"]["properties"]["errors"]["items"] = {"$ref": _SCHEMAS + "Error"}
    return schemas


# -- request schemas and parameters ---------------------------------------------------------


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or ``null``: the handlers read ``null`` as "absent" (CONTRACT.md §4)."""
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


def _name_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_LENGTH,
        "pattern": _NOT_BLANK,
        "description": "Not blank; no NUL characters.",
    }


def _ttl_schema() -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": MIN_TOKEN_TTL,
        "maximum": MAX_TOKEN_TTL,
        "description": "Seconds; an integral float such as 3600.0 is accepted.",
    }


def _request_schemas() -> dict[str, Any]:
    machine_id = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _NOT_BLANK}
    return {
        "CreateMachineRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": _name_schema(),
                "scoped_machines": _nullable(
                    {
                        "type": "array",
                        "maxItems": MAX_SCOPED_MACHINES,
                        "items": {**machine_id, "description": "A machine id of this instance."},
                        "description": "Machines the new machine may call (422 if one is unknown).",
                    }
                ),
                "default_token_ttl": _nullable({**_ttl_schema(), "default": DEFAULT_TOKEN_TTL}),
            },
        },
        "UpdateMachineRequest": {
            "type": "object",
            "additionalProperties": False,
            "description": "Only the fields present change; scopes change only via /scopes.",
            "properties": {
                "name": _nullable(_name_schema()),
                "default_token_ttl": _nullable(_ttl_schema()),
            },
        },
        "RotateSecretKeyRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["previous_token_ttl"],
            "properties": {
                "previous_token_ttl": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_PREVIOUS_TOKEN_TTL,
                    "description": "Seconds the old secret keeps working (0: stops at once).",
                },
            },
        },
        "CreateMachineScopeRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["to_machine_id"],
            "properties": {
                "to_machine_id": {
                    **machine_id,
                    "description": "The machine to call (404 unknown, 422 itself, 409 present).",
                },
            },
        },
        "CreateM2MTokenRequest": {
            "type": "object",
            "additionalProperties": False,
            "description": (
                "Subject is the calling machine; scopes are a snapshot of its scoped machines."
            ),
            "properties": {
                "token_format": {
                    "type": ["string", "null"],
                    "enum": [*(f.value for f in TokenFormat), None],
                    "default": TokenFormat.OPAQUE.value,
                },
                "seconds_until_expiration": {
                    "type": ["number", "null"],
                    "exclusiveMinimum": 0,
                    "maximum": MAX_TOKEN_TTL,
                    "description": "Lifetime; default the machine's default_token_ttl.",
                },
                "claims": {
                    "type": ["object", "null"],
                    "propertyNames": {"not": {"enum": sorted(RESERVED_CLAIMS)}},
                    "description": (
                        "Custom claims: at most 8 KiB of JSON, 8 levels deep, no reserved names"
                        " (400 machine_token_reserved_claim)."
                    ),
                },
                "min_remaining_ttl_seconds": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "maximum": MAX_TOKEN_TTL,
                    "description": (
                        "Opaque tokens: reuse a live token with as many seconds left; must be"
                        " less than the lifetime (400)."
                    ),
                },
            },
        },
        "RevokeM2MTokenRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "revocation_reason": {
                    "type": ["string", "null"],
                    "maxLength": MAX_REVOCATION_REASON_LENGTH,
                },
            },
        },
        "VerifyM2MTokenRequest": {
            "type": "object",
            "additionalProperties": False,
            "anyOf": [{"required": ["token"]}, {"required": ["secret"]}],
            "properties": {
                "token": {"type": "string", "description": "An opaque mt_ token or a JWT."},
                "secret": {
                    "type": "string",
                    "deprecated": True,
                    "description": "Legacy name of token (the Python SDK's helper sends it).",
                },
            },
        },
    }


def _query(
    name: str,
    schema: dict[str, Any],
    description: str,
    *,
    required: bool = False,
) -> dict[str, Any]:
    parameter = {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }
    if not required:
        # NOTE: the handlers read an empty optional parameter (``?limit=``) as absent.
        parameter["allowEmptyValue"] = True
    return parameter


def _int_query(name: str, minimum: int, maximum: int, default: int, description: str) -> Any:
    schema = {
        "anyOf": [
            {"type": "integer", "minimum": minimum, "maximum": maximum},
            # NOTE: the handlers also read "+5" and "+5.0" (web/inputs.py), in range as above.
            {"type": "string", "pattern": r"^\+[0-9]{1,20}(\.0{1,12})?$"},
        ],
        "default": default,
    }
    return _query(name, schema, f"{description} Integral floats (10.0) are accepted.")


def _path(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": pattern},
        "description": description,
    }


def _bool_query(name: str, description: str) -> dict[str, Any]:
    return _query(name, {"type": "boolean", "default": False}, description)


_MACHINE_ID: Final = _path("machine_id", _ID_PATTERNS["mch"], "A machine id (mch_…).")
_OTHER_MACHINE_ID: Final = _path(
    "other_machine_id", _ID_PATTERNS["mch"], "The target machine of the scope."
)
_TOKEN_ID: Final = _path("token_id", _ID_PATTERNS["mt"], "A token id (mt_ + 32 hex).")
_OFFSET: Final = _int_query("offset", 0, _MAX_OFFSET, 0, "Items to skip.")

# -- responses --------------------------------------------------------------------------------

_FORM_CODES: Final = (
    "form_param_missing",
    "form_param_format_invalid",
    "form_param_value_invalid",
    "form_param_unknown",
    "form_param_max_length_exceeded",
    "form_param_array_size_exceeded",
)


@dataclass(frozen=True)
class _Error:
    """One error response of the components: status, the codes it can carry, why."""

    status: int
    codes: tuple[str, ...]
    description: str
    retry_after: bool = False


_ERRORS: Final = {
    "MachineBadRequest": _Error(
        400, ("request_body_invalid",), "Malformed JSON, not an object, or not application/json."
    ),
    "TokenBadRequest": _Error(
        400,
        (
            "request_body_invalid",
            "missing_query_parameter",
            "machine_token_reserved_claim",
            *_FORM_CODES,
        ),
        "Malformed body, a missing query parameter, or a field error (400 on /m2m_tokens).",
    ),
    "Unauthorized": _Error(
        401,
        (
            "authentication_invalid",
            "authorization_header_format_invalid",
            "clerk_key_invalid",
            "machine_secret_key_invalid",
        ),
        "No key, a malformed Authorization header, or a key that is not valid here.",
    ),
    "Forbidden": _Error(403, ("authorization_invalid",), "A valid key that may not do this."),
    "NotFound": _Error(404, ("resource_not_found",), "No such object in this instance."),
    "TokenInvalid": _Error(
        404, ("token_invalid",), "The token is not valid, for whatever reason (one answer)."
    ),
    "Conflict": _Error(409, ("conflict",), "The scope already exists."),
    "PayloadTooLarge": _Error(413, ("request_body_too_large",), "The body is over the limit."),
    "UnprocessableEntity": _Error(
        422, _FORM_CODES, "A field is missing, mistyped, out of range or unknown (on /machines)."
    ),
    "TooManyRequests": _Error(
        429,
        ("too_many_requests",),
        "Rate limited: retry after Retry-After seconds.",
        retry_after=True,
    ),
    "ServiceUnavailable": _Error(
        503, ("service_unavailable",), "Storage is unavailable: retry later.", retry_after=True
    ),
}

_COMMON_HEADERS: Final = ("X-Request-Id", "Cache-Control", "X-Content-Type-Options")


def _headers_components() -> dict[str, Any]:
    return {
        "X-Request-Id": {
            "description": "This request's id; the error body's clerk_trace_id and the log's.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        },
        "Cache-Control": {
            "description": "Responses may carry secrets: no cache keeps any.",
            "required": True,
            "schema": {"type": "string", "const": "no-store"},
        },
        "X-Content-Type-Options": {
            "required": True,
            "schema": {"type": "string", "const": "nosniff"},
        },
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
    }


def _header_refs(*extra: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in (*_COMMON_HEADERS, *extra)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    # NOTE: exactly application/json, no charset: the JS SDK compares it (CONTRACT.md §5).
    return {"application/json": {"schema": schema}}


def _error_component(error: _Error) -> dict[str, Any]:
    schema = {
        "allOf": [
            {"$ref": _SCHEMAS + "Errors"},
            {
                "type": "object",
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"code": {"type": "string", "enum": list(error.codes)}},
                        },
                    },
                },
            },
        ],
    }
    extra = ("Retry-After",) if error.retry_after else ()
    return {
        "description": error.description,
        "headers": _header_refs(*extra),
        "content": _json(schema),
    }


# -- operations -------------------------------------------------------------------------------

SK: Final = "sk"
ANY_KEY: Final = "any"
AK: Final = "ak"


@dataclass(frozen=True)
class _Operation:
    """One route and method: what it takes, who may call it, what it answers."""

    method: str
    path: str  # without the /v1 prefix
    operation_id: str
    summary: str
    key: str | None  # SK, ANY_KEY, AK or None for no key
    success: tuple[int, str, str]  # status, schema component, description
    errors: tuple[str, ...] = ()
    request: str | None = None
    body_required: bool = False
    parameters: tuple[dict[str, Any], ...] = ()
    links: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    tag: str = "machines"
    prefixed: bool = True
    description: str = ""
    raw_content: str | None = None  # a non-JSON success media type


_MACHINE_BODY_ERRORS: Final = ("MachineBadRequest", "PayloadTooLarge", "UnprocessableEntity")
_TOKEN_BODY_ERRORS: Final = ("TokenBadRequest", "PayloadTooLarge")


def _machine_links() -> dict[str, tuple[str, dict[str, Any]]]:
    """From a created machine to every operation on it, by ``id``.

    NOTE: not from the list: a walk would then rotate or delete machines it did not create,
    and its next steps would depend on what earlier walks left behind.
    """
    source = "$response.body#/id"
    targets = (
        "getMachine",
        "updateMachine",
        "deleteMachine",
        "getMachineSecretKey",
        "rotateMachineSecretKey",
        "createMachineScope",
    )
    return {
        target[0].upper() + target[1:]: (target, {"parameters": {"path.machine_id": source}})
        for target in targets
    }


def _token_links() -> dict[str, tuple[str, dict[str, Any]]]:
    by_id = {"parameters": {"path.token_id": "$response.body#/id"}}
    return {
        "GetM2MToken": ("getM2MToken", by_id),
        "RevokeM2MToken": ("revokeM2MToken", by_id),
        "ListM2MTokens": (
            "listM2MTokens",
            {"parameters": {"query.subject": "$response.body#/subject"}},
        ),
    }


def _operations() -> tuple[_Operation, ...]:
    machine_list_params = (
        _int_query("limit", 1, MAX_LIST_LIMIT, DEFAULT_LIST_LIMIT, "Page size."),
        _OFFSET,
        _query(
            "query",
            {"type": "string", "maxLength": MAX_NAME_LENGTH},
            "Exact id, or a case-insensitive part of the name.",
        ),
        _query(
            "order_by",
            {
                "type": "string",
                "enum": [f"{sign}{f}" for f in ("created_at", "name") for sign in ("", "+", "-")],
                "default": "-created_at",
            },
            "Sort field, optionally prefixed with + (ascending) or - (descending).",
        ),
    )
    token_list_params = (
        _query(
            "subject",
            {"type": "string", "minLength": 1},
            "The machine whose tokens to list (a machine key: its own only, else 403).",
            required=True,
        ),
        _bool_query("revoked", "Also include revoked tokens."),
        _bool_query("expired", "Also include expired tokens."),
        _int_query("limit", 1, MAX_TOKEN_LIST_LIMIT, DEFAULT_TOKEN_LIST_LIMIT, "Page size."),
        _OFFSET,
    )
    feed_params = (
        _int_query("after", 0, _MAX_OFFSET, 0, "The cursor of the previous page (0: start)."),
        _int_query("limit", 1, MAX_FEED_LIMIT, DEFAULT_FEED_LIMIT, "Page size."),
        _int_query(
            "wait", 0, MAX_WAIT_SECONDS, 0, "Seconds to wait for a revocation when none is new."
        ),
    )
    get_machine_link = {
        "GetMachine": ("getMachine", {"parameters": {"path.machine_id": "$response.body#/id"}})
    }
    return (
        _Operation(
            "GET",
            "/machines",
            "listMachines",
            "List machines",
            SK,
            (200, "MachineList", "A page of machines and the total count."),
            parameters=machine_list_params,
            errors=("UnprocessableEntity",),
        ),
        _Operation(
            "POST",
            "/machines",
            "createMachine",
            "Create a machine",
            SK,
            (200, "MachineCreated", "The machine, with the only copy of its secret_key."),
            errors=_MACHINE_BODY_ERRORS,
            request="CreateMachineRequest",
            body_required=True,
            links=_machine_links(),
        ),
        _Operation(
            "GET",
            "/machines/{machine_id}",
            "getMachine",
            "Get a machine",
            SK,
            (200, "Machine", "The machine."),
            errors=("NotFound",),
            parameters=(_MACHINE_ID,),
        ),
        _Operation(
            "PATCH",
            "/machines/{machine_id}",
            "updateMachine",
            "Update a machine",
            SK,
            (200, "Machine", "The updated machine."),
            errors=(*_MACHINE_BODY_ERRORS, "NotFound"),
            request="UpdateMachineRequest",
            parameters=(_MACHINE_ID,),
            links=get_machine_link,
        ),
        _Operation(
            "DELETE",
            "/machines/{machine_id}",
            "deleteMachine",
            "Delete a machine",
            SK,
            (200, "MachineDeleted", "Deleted, with its scopes; its tokens are revoked."),
            errors=("NotFound",),
            parameters=(_MACHINE_ID,),
            links=get_machine_link,
        ),
        _Operation(
            "GET",
            "/machines/{machine_id}/secret_key",
            "getMachineSecretKey",
            "Get a machine's secret key",
            SK,
            (200, "MachineSecretKey", "The current secret key."),
            errors=("NotFound",),
            parameters=(_MACHINE_ID,),
        ),
        _Operation(
            "POST",
            "/machines/{machine_id}/secret_key/rotate",
            "rotateMachineSecretKey",
            "Rotate a machine's secret key",
            SK,
            (200, "MachineSecretKey", "The new secret key."),
            errors=(*_MACHINE_BODY_ERRORS, "NotFound"),
            request="RotateSecretKeyRequest",
            body_required=True,
            parameters=(_MACHINE_ID,),
        ),
        _Operation(
            "POST",
            "/machines/{machine_id}/scopes",
            "createMachineScope",
            "Let a machine call another",
            SK,
            (200, "MachineScope", "The new scope."),
            errors=(*_MACHINE_BODY_ERRORS, "NotFound", "Conflict"),
            request="CreateMachineScopeRequest",
            body_required=True,
            parameters=(_MACHINE_ID,),
            links={
                "DeleteMachineScope": (
                    "deleteMachineScope",
                    {
                        "parameters": {
                            "path.machine_id": "$response.body#/from_machine_id",
                            "path.other_machine_id": "$response.body#/to_machine_id",
                        },
                    },
                ),
                "GetMachine": (
                    "getMachine",
                    {"parameters": {"path.machine_id": "$response.body#/from_machine_id"}},
                ),
            },
        ),
        _Operation(
            "DELETE",
            "/machines/{machine_id}/scopes/{other_machine_id}",
            "deleteMachineScope",
            "Remove a scope",
            SK,
            (200, "MachineScopeDeleted", "The removed scope."),
            errors=("NotFound",),
            parameters=(_MACHINE_ID, _OTHER_MACHINE_ID),
        ),
        _Operation(
            "GET",
            "/jwks",
            "getJwks",
            "The instance's public signing keys",
            SK,
            (200, "Jwks", "The active key and retired keys with live tokens."),
            tag="jwks",
        ),
        _Operation(
            "GET",
            "/m2m_tokens/jwks",
            "getM2MTokenJwks",
            "The public signing keys, for any key of the instance",
            ANY_KEY,
            (200, "Jwks", "The same keys as GET /v1/jwks."),
            tag="jwks",
            description="Gatepass extension: a machine key may read the public keys too.",
        ),
        _Operation(
            "POST",
            "/m2m_tokens",
            "createM2MToken",
            "Mint an M2M token",
            AK,
            (201, "M2MTokenCreated", "The token, with the only copy of its bearer string."),
            errors=_TOKEN_BODY_ERRORS,
            request="CreateM2MTokenRequest",
            tag="m2m_tokens",
            description="Only the minting machine's own ak_ key (else 401).",
            links={
                **_token_links(),
                "VerifyM2MToken": (
                    "verifyM2MToken",
                    {"requestBody": {_BEARER_FIELD: "$response.body#/token"}},
                ),
            },
        ),
        _Operation(
            "GET",
            "/m2m_tokens",
            "listM2MTokens",
            "List a machine's tokens",
            ANY_KEY,
            (200, "M2MTokenList", "A page of tokens, newest first, and the total count."),
            errors=("TokenBadRequest", "Forbidden"),
            parameters=token_list_params,
            tag="m2m_tokens",
        ),
        _Operation(
            "POST",
            "/m2m_tokens/verify",
            "verifyM2MToken",
            "Verify a token",
            ANY_KEY,
            (200, "M2MToken", "The token's record: it is valid for the caller."),
            errors=(*_TOKEN_BODY_ERRORS, "TokenInvalid"),
            request="VerifyM2MTokenRequest",
            body_required=True,
            tag="m2m_tokens",
            description=(
                "Unknown, malformed, revoked, expired, out-of-scope and other-instance tokens"
                " all get the same 404 token_invalid."
            ),
        ),
        _Operation(
            "GET",
            "/m2m_tokens/revocations",
            "listM2MTokenRevocations",
            "The revocation feed",
            ANY_KEY,
            (200, "M2MTokenRevocations", "Revoked token ids after the cursor."),
            errors=("TokenBadRequest",),
            parameters=feed_params,
            tag="m2m_tokens",
            description=(
                "Gatepass extension: revoked ids (opaque and JWT jti) for local verifiers;"
                " long-polls up to `wait` seconds."
            ),
        ),
        _Operation(
            "GET",
            "/m2m_tokens/{token_id}",
            "getM2MToken",
            "Get a token by id",
            ANY_KEY,
            (200, "M2MToken", "The token (a machine key: its own only)."),
            errors=("NotFound",),
            parameters=(_TOKEN_ID,),
            tag="m2m_tokens",
            description="Gatepass extension.",
        ),
        _Operation(
            "POST",
            "/m2m_tokens/{token_id}/revoke",
            "revokeM2MToken",
            "Revoke a token",
            ANY_KEY,
            (200, "M2MToken", "The revoked token; revoking again keeps the first reason."),
            errors=(*_TOKEN_BODY_ERRORS, "NotFound"),
            request="RevokeM2MTokenRequest",
            parameters=(_TOKEN_ID,),
            tag="m2m_tokens",
            links={
                "GetM2MToken": (
                    "getM2MToken",
                    {"parameters": {"path.token_id": "$response.body#/id"}},
                )
            },
        ),
        _Operation(
            "GET",
            "/healthz",
            "getHealthz",
            "Liveness",
            None,
            (200, "Status", "The process is up."),
            tag="system",
            prefixed=False,
        ),
        _Operation(
            "GET",
            "/readyz",
            "getReadyz",
            "Readiness",
            None,
            (200, "Status", "Storage answers."),
            errors=("ServiceUnavailable",),
            tag="system",
            prefixed=False,
        ),
        _Operation(
            "GET",
            "/metrics",
            "getMetrics",
            "Prometheus metrics",
            None,
            (200, "", "Prometheus text exposition format."),
            tag="system",
            prefixed=False,
            raw_content="text/plain",
        ),
        _Operation(
            "GET",
            "/openapi.json",
            "getOpenApi",
            "This document",
            None,
            (200, "", "The OpenAPI document."),
            tag="system",
            raw_content="application/json",
        ),
    )


def _operation_object(op: _Operation, suffix: str) -> dict[str, Any]:
    status, schema_name, description = op.success
    if op.raw_content is not None:
        content = {
            op.raw_content: {
                "schema": {"type": "string" if op.raw_content != "application/json" else "object"}
            }
        }
    else:
        content = _json({"$ref": _SCHEMAS + schema_name})
    success: dict[str, Any] = {
        "description": description,
        "headers": _header_refs(),
        "content": content,
    }
    if op.links:
        success["links"] = {
            name: {"operationId": target + suffix, **spec}
            for name, (target, spec) in sorted(op.links.items())
        }
    errors = list(op.errors)
    if op.key is not None:
        # NOTE: every keyed route: 401 without a valid key, 429 from the rate limiter,
        # 503 when storage cannot be reached to check the key.
        errors += ["Unauthorized", "TooManyRequests", "ServiceUnavailable"]
    if op.key == SK:
        errors.append("Forbidden")  # a machine key on an sk-only route
    responses: dict[str, Any] = {str(status): success}
    for name in sorted(set(errors), key=lambda n: (_ERRORS[n].status, n)):
        responses[str(_ERRORS[name].status)] = {"$ref": f"#/components/responses/{name}"}
    obj: dict[str, Any] = {
        "operationId": op.operation_id + suffix,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        obj["description"] = op.description
    if op.parameters:
        obj["parameters"] = [copy.deepcopy(p) for p in op.parameters]
    if op.request is not None:
        obj["requestBody"] = {
            "required": op.body_required,
            "content": _json({"$ref": _SCHEMAS + op.request}),
        }
    obj["responses"] = responses
    obj["security"] = [] if op.key is None else [{"bearerAuth": []}]
    return obj


def build_document() -> dict[str, Any]:
    """The whole document, from the wire structs and the operations table."""
    paths: dict[str, dict[str, Any]] = {}
    operations = _operations()
    # NOTE: every API route is served with and without /v1 (CONTRACT.md §2): the JS SDK
    # omits it on some calls. The unprefixed twin is the same operation.
    for prefix, suffix in (("/v1", ""), ("", "WithoutPrefix")):
        for op in operations:
            if not op.prefixed and prefix:
                continue
            item = paths.setdefault(prefix + op.path, {})
            item[op.method.lower()] = _operation_object(op, suffix if op.prefixed else "")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gatepass",
            "version": "1",
            "summary": "Self-hosted machine-to-machine auth speaking Clerk's Backend API.",
            "description": (
                "Machines and M2M tokens as in Clerk's Backend API, plus Gatepass extensions."
                " Every API route is also served without the /v1 prefix (operation ids ending"
                " in WithoutPrefix). Timestamps are Unix milliseconds."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "machines", "description": "Machines, their secret keys and scopes (sk_)."},
            {"name": "m2m_tokens", "description": "Minting, listing, verifying, revoking."},
            {"name": "jwks", "description": "Public keys of JWT-format tokens."},
            {"name": "system", "description": "Liveness, readiness, metrics, this document."},
        ],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "An instance secret key (sk_live_…/sk_test_…) or a machine secret key"
                        " (ak_…), as each operation says."
                    ),
                },
            },
            "headers": _headers_components(),
            "responses": {name: _error_component(e) for name, e in _ERRORS.items()},
            "schemas": {**_response_schemas(), **_request_schemas()},
        },
    }


def render(document: dict[str, Any]) -> bytes:
    """The document as the checked-in file holds it: stable order, indented, final newline."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    """``python -m gatepass_server.web.openapi [--write]``: print or rewrite the document."""
    parser = argparse.ArgumentParser(prog="python -m gatepass_server.web.openapi")
    parser.add_argument("--write", action="store_true", help=f"rewrite {DOCUMENT_FILE}")
    args = parser.parse_args(argv)
    rendered = render(build_document())
    if args.write:
        target = Path(__file__).with_name(DOCUMENT_FILE)
        target.write_bytes(rendered)
        sys.stdout.write(f"wrote {target}\n")
    else:
        sys.stdout.buffer.write(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
