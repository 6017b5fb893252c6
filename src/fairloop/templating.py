"""Every report a person reads is rendered here, through jinja2 templates with autoescaping.

Data values (group names, column names, category values, audit findings, reviewer comments)
come from files and people fairloop does not control. Python-Markdown and the Prefect UI
both pass raw HTML through, so a value must never reach Markdown as markup: in Markdown
templates every ``{{ value }}`` is HTML-escaped *and* has its Markdown syntax escaped (a ``|``
would break a table, a ``[..](..)`` would become a link), and in HTML templates jinja2's own
autoescaping applies. Only what fairloop itself produces (an inline PNG, Markdown rendered from
an escaped template) is passed as :class:`markupsafe.Markup`.
"""

from __future__ import annotations

import functools
import html
import re

import jinja2
from markupsafe import Markup

# Backslash-escapable in CommonMark (the Prefect UI) and, with MARKDOWN_EXTRA_ESCAPES, in
# Python-Markdown (report.html)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|#~!@])")
# what Python-Markdown (with its tables extension) does not take as a backslash escape by itself
MARKDOWN_EXTRA_ESCAPES = ("~", "@")


def md_text(value) -> Markup:
    """``value`` as literal text inside Markdown: HTML-escaped, Markdown syntax escaped, on one
    line (a newline would end a table row). ``@`` is escaped too: the Prefect UI links names like
    ``recipe+template@0.02`` as e-mail addresses, and shows an HTML entity for it (``&#64;``)
    literally."""
    if isinstance(value, Markup):
        return value
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    # then HTML: the entities it adds must not be Markdown-escaped themselves
    return Markup(html.escape(text, quote=False))


def md_cells(rows: list[dict]) -> list[dict]:
    """A Prefect table artifact's rows with every text cell as literal Markdown: the UI renders
    each cell as Markdown (a name with '@' became an e-mail link)."""
    return [{key: md_text(value) if isinstance(value, str) else value for key, value in row.items()} for row in rows]


def format_number(value, digits: int = 3) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}f}"


def format_interval(value, digits: int = 3) -> str:
    if not value:
        return ""
    low, high = value
    return f"[{format_number(low, digits)}, {format_number(high, digits)}]"


def format_percent(value, digits: int = 0) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{100 * value:.{digits}f}%"


def format_points(value, digits: int = 1) -> str:
    """'+8.3 pp': a signed difference of two shares, in percent points."""
    if value is None or value != value:
        return "n/a"
    return f"{100 * value:+.{digits}f} pp"


def format_percent_interval(value, digits: int = 1) -> str:
    """'[7.9, 9.4]': an interval of shares in percent points (its value carries the % sign)."""
    if not value:
        return ""
    return f"[{100 * value[0]:.{digits}f}, {100 * value[1]:.{digits}f}]"


@functools.cache
def environment(kind: str) -> jinja2.Environment:
    """The jinja2 environment for ``kind`` 'md' (Markdown output) or 'html'."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fairloop", "templates"),
        autoescape=True,
        finalize=md_text if kind == "md" else None,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(number=format_number, interval=format_interval, percent=format_percent, points=format_points, percent_interval=format_percent_interval, md=md_text)
    return env


def render(template: str, **context) -> str:
    """Render ``templates/<template>`` (``*.md.j2`` as Markdown, ``*.html.j2`` as HTML)."""
    kind = "html" if template.endswith(".html.j2") else "md"
    return environment(kind).get_template(template).render(**context)
