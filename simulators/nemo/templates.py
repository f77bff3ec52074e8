"""Evaluator templates: Jinja rendered per dataset row, the way NeMo Evaluator fills request bodies.

Every string in a template is rendered with ``item`` (the row) and, for judges, ``sample`` (the model's
answer). A string that renders to JSON is parsed back, so ``"{{ item.request.messages | tojson }}"``
becomes the list of messages, not a string containing it. Templates come from request bodies, so they
run in Jinja's sandbox; a missing field renders empty (and ``tojson`` of it is ``null``) rather than
failing the row.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment


class TemplateRenderError(ValueError):
    """A template could not be compiled or rendered; the message names the template."""


def _tojson(value: Any, indent: int | None = None) -> str:
    # Plain JSON (Jinja's own tojson HTML-escapes <, > and &, which a chat request must not see).
    if isinstance(value, Undefined):
        return "null"
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


_ENV = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.filters["tojson"] = _tojson


@lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    return _ENV.from_string(source)


def render_text(source: str, context: dict[str, Any]) -> str:
    """Render one template string."""
    try:
        return _compile(source).render(**context)
    except TemplateError as exc:
        raise TemplateRenderError(f"template {source[:80]!r}: {type(exc).__name__}: {exc}") from exc
    except (TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
        raise TemplateRenderError(f"template {source[:80]!r}: {type(exc).__name__}: {exc}") from exc


def _parse_back(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in ("[", "{") or stripped == "null":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


def render_value(template: Any, context: dict[str, Any]) -> Any:
    """Render a template value recursively; rendered strings that are JSON come back as JSON values.

    Keys whose template string renders to ``null`` are dropped, so ``"tools": "{{ item.tools | tojson }}"``
    on a row without tools sends no ``tools`` at all.
    """
    if isinstance(template, str):
        if "{{" not in template and "{%" not in template:
            return template
        return _parse_back(render_text(template, context))
    if isinstance(template, dict):
        rendered = {}
        for key, value in template.items():
            result = render_value(value, context)
            if result is None and isinstance(value, str):
                continue
            rendered[key] = result
        return rendered
    if isinstance(template, list):
        return [render_value(value, context) for value in template]
    return template
