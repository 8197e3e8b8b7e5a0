"""What the status page accepts from a request and adds to each response: bodies under ``MAX_BODY``
(``PageRequest``, ``check_body``), sign-in redirects only to the page's own views (``inside``), and the headers
that keep its pages from being framed, sniffed, cached or made to run foreign script (``secure_headers``)."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import MapAdapter
from werkzeug.wrappers import Request, Response

MAX_BODY = 64 * 1024  # the page's forms are a few hundred bytes; nothing larger is ever read
MAX_NEXT = 2000  # longest path sign-in redirects to


class PageRequest(Request):
    """A request whose body is read only up to MAX_BODY: a larger one is refused (413), never held in memory."""

    max_content_length = MAX_BODY + 1  # what the stream yields at most: one byte more tells a body too large
    max_form_memory_size = MAX_BODY


def secure_headers(response: Response, nonce: str) -> None:
    """Only the page's own script and styles (by ``nonce``), no framing, no sniffing, no caching."""
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"  # no clickjacking of the action buttons
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


def check_body(request: Request) -> None:
    """Read the body now, under MAX_BODY, on every route: 413 on a larger Content-Length before any of it is
    read, or as soon as a body without one (chunked) passes the limit. Forms are then parsed from this copy."""
    too_large = f"The status page takes request bodies of at most {MAX_BODY // 1024} KiB."
    if (request.content_length or 0) > MAX_BODY:
        raise RequestEntityTooLarge(too_large)
    if len(request.get_data(cache=True)) > MAX_BODY:  # the stream stops one byte past the limit
        raise RequestEntityTooLarge(too_large)


def inside(adapter: MapAdapter, back: str) -> str:
    """Where sign-in goes: ``back`` when it names one of the page's own views (rebuilt from its route, with only
    ``page`` kept from the query), else the page's root. So never another site (``//x``, ``/\\t/x``, ``https:``)."""
    root = adapter.build("index")
    if (
        len(back) > MAX_NEXT
        or not back.startswith("/")
        or any(c == "\\" or c.isspace() or not c.isprintable() for c in back)
    ):
        return root
    parts = urlsplit(back)
    if parts.scheme or parts.netloc:
        return root
    try:
        endpoint, args = adapter.match(unquote(parts.path), method="GET")
    except HTTPException:  # not a view of the page (404), or one that only takes POSTs, or a redirect
        return root
    if endpoint == "login":
        return root
    page = parse_qs(parts.query).get("page", [""])[0]
    return adapter.build(
        str(endpoint), {**args, **({"page": page} if page.isascii() and page.isdigit() and len(page) < 7 else {})}
    )
