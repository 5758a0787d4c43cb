"""A small JSON Schema (draft 2020-12 subset) checker for request bodies.

The schemas in openapi.py are the single source of truth: the server validates requests
with them and publishes them in /v1/openapi.json, so the document cannot drift from what is
accepted. Supported keywords: type, properties, required, additionalProperties (false or a
schema), propertyNames, items, enum, minimum, maximum, minLength, maxLength, pattern, oneOf,
anyOf, $ref to #/components/schemas/..., nullable via type lists.

Structural problems (wrong type, unknown or missing field) are 400; a value outside its
allowed range, length or pattern is 422 with the code `invalid_format`: the request breaks
what the published document says. (Well-formed values that make no sense, such as an
address outside the pod's subnet, are refused later with other codes.)

`x-explain` on a string schema names a function of `explainers` that says precisely what is
wrong with a value that failed the pattern ("needs a prefix length", "must be 1..32"); the
pattern stays the rule, the explainer only words the refusal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache

from controller.errors import ApiError, bad_request, invalid

FORMAT = "invalid_format"
Explainer = Callable[[str, str], object]     # (value, where) -> raises ApiError

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _json_type(value: object) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern:
    """A JSON Schema (ECMA-262) pattern as Python's `re` must read it: ASCII classes, and a
    closing `$` that matches only at the very end (Python's also matches before a final
    newline, which would let "h1\\n" through)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern, re.ASCII)


def check(value: object, schema: Mapping, components: Mapping | None = None,
          where: str = "body", explainers: Mapping[str, Explainer] | None = None) -> None:
    """Raise ApiError (400/422) naming `where` if `value` does not satisfy `schema`."""
    components = components or {}
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        check(value, components[name], components, where, explainers)
        return
    if "oneOf" in schema:
        errors = []
        for option in schema["oneOf"]:
            try:
                check(value, option, components, where, explainers)
                return
            except ApiError as e:
                errors.append(e)
        # report the most specific failure: a 422 means the type matched but a value did not
        raise max(errors, key=lambda e: e.status)
    if "anyOf" in schema:          # besides the other keywords, e.g. alternative `required`s
        errors = []
        for option in schema["anyOf"]:
            try:
                check(value, option, components, where, explainers)
                break
            except ApiError as e:
                errors.append(e)
        else:
            raise max(errors, key=lambda e: e.status)
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in types):
            want = " or ".join(("an " if t[0] in "aeiou" else "a ") + t for t in types)
            raise bad_request(f"{where} must be {want}, got {_json_type(value)} {_short(value)}")
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        raise invalid(f"{where} is {_short(value)}; allowed: {allowed}", FORMAT)
    if isinstance(value, dict):
        _check_object(value, schema, components, where, explainers)
    elif isinstance(value, list):
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                check(item, items, components, f"{where}[{i}]", explainers)
    elif isinstance(value, str):
        _check_string(value, schema, where, explainers)
    elif _TYPES["number"](value):
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            rng = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise invalid(f"{where} is {value}, out of range {rng}", FORMAT)


def _check_string(value: str, schema: Mapping, where: str,
                  explainers: Mapping[str, Explainer] | None) -> None:
    if len(value) < schema.get("minLength", 0):
        raise invalid(f"{where} must not be shorter than {schema['minLength']} characters",
                      FORMAT)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise invalid(f"{where} is {len(value)} characters long; at most "
                      f"{schema['maxLength']} are allowed", FORMAT)
    if "pattern" in schema and not _regex(schema["pattern"]).search(value):
        explain = (explainers or {}).get(schema.get("x-explain", ""))
        if explain is not None:
            try:
                explain(value, where)
            except ApiError as e:
                raise invalid(e.message, FORMAT) from None
        hint = schema.get("x-hint") or f"it must match {schema['pattern']}"
        raise invalid(f"{where} {_short(value)} is not valid: {hint}", FORMAT)


def _check_object(value: dict, schema: Mapping, components: Mapping, where: str,
                  explainers: Mapping[str, Explainer] | None) -> None:
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key in value:
        if key not in props and extra is False:
            allowed = ", ".join(props) or "none"
            raise bad_request(f"{where} has unknown field {key!r} (allowed: {allowed})")
    for key in schema.get("required", ()):
        if key not in value:
            raise bad_request(f"{where} is missing the required field {key!r}")
    names = schema.get("propertyNames")
    if names is not None:
        for key in value:
            check(key, names, components, f"{where} key {_short(key)}", explainers)
    for key, item in value.items():
        sub = props.get(key)
        if sub is None and isinstance(extra, Mapping):
            sub = extra
        if sub is not None:
            check(item, sub, components, f"{key!r}" if where == "body" else f"{where}.{key}",
                  explainers)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
