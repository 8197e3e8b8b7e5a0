"""The jobs as JSON over HTTP, beside the status page (``/api/...``), for apps that are not written in Python.

The same tokens as the page, sent as ``Authorization: Bearer <token>``: the read-only token may GET, the
read-write one may also change jobs. A browser's session cookie may read, never write (no CSRF token here). It is
what ``dynoclock.connect()`` does (client.py), with the same validation: a bad spec is a 422 whose problems name
their key paths. Specs are shown with secret values masked. ``/api/openapi.json`` describes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from dynoclock.config.credentials import schedule_secrets
from dynoclock.config.problems import ConfigError
from dynoclock.observe.redact import MASK, redact
from dynoclock.observe.timefmt import iso_utc
from dynoclock.state.controls import UnknownJob
from dynoclock.timesource import Clock

if TYPE_CHECKING:
    from dynoclock.client import Scheduler
    from dynoclock.jsontypes import JSONValue
    from dynoclock.ui.access import Access

ROUTES = Map(
    [
        Rule("/api/openapi.json", endpoint="openapi", methods=["GET"]),
        Rule("/api/jobs", endpoint="list", methods=["GET"]),
        Rule("/api/jobs", endpoint="create", methods=["POST"]),
        Rule("/api/jobs/<job>", endpoint="get", methods=["GET"]),
        Rule("/api/jobs/<job>", endpoint="replace", methods=["PUT"]),
        Rule("/api/jobs/<job>", endpoint="delete", methods=["DELETE"]),
        Rule("/api/jobs/<job>/pause", endpoint="pause", methods=["POST"]),
        Rule("/api/jobs/<job>/resume", endpoint="resume", methods=["POST"]),
        Rule("/api/jobs/<job>/run", endpoint="run", methods=["POST"]),
        Rule("/api/jobs/<job>/history", endpoint="history", methods=["GET"]),
    ]
)


class JobsApi:
    def __init__(self, access: Access, state: Callable[[], tuple[str, Collection[str]]], clock: Clock):
        self.access = access
        self.state = state  # the state URL (the schema ensured) and the page's schedule.yaml ids, on first use
        self.clock = clock
        self._scheduler: Scheduler | None = None

    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            from dynoclock.client import Scheduler

            url, known = self.state()
            self._scheduler = Scheduler(url, self.clock)
            self._scheduler.controls.known = known
        return self._scheduler

    def respond(self, request: Request) -> Response:
        from dynoclock.ui.guards import check_body

        try:
            check_body(request)
            endpoint, args = ROUTES.bind_to_environ(request.environ).match()
        except HTTPException as exc:
            return _json({"error": exc.description or exc.name}, exc.code or 500)
        if not self.access.enabled:
            return _json({"error": "the status page is off: set CLOCK_UI_TOKEN or pass auth="}, 403)
        identity = self.access.identify(request)
        if identity is None and endpoint != "openapi":
            response = _json({"error": "send Authorization: Bearer <token>"}, 401)
            response.headers["WWW-Authenticate"] = 'Bearer realm="dynoclock"'
            return response
        if request.method != "GET":
            if identity is None or identity.role != "write":
                return _json({"error": "this token may only read"}, 403)
            if identity.via == "token":  # a browser's cookie: no CSRF token here, so no writes
                return _json({"error": "changes need Authorization: Bearer <token>, not a session cookie"}, 403)
        try:
            return getattr(self, f"do_{endpoint}")(request, **args)  # type: ignore[no-any-return]
        except ConfigError as exc:
            return _json({"error": "invalid job", "problems": [str(p) for p in exc.problems]}, 422)
        except UnknownJob as exc:
            return _json({"error": str(exc)}, 404)
        except _BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        except Exception as exc:  # the database is away: say so, without a traceback or a secret
            return _json({"error": redact(f"state database unavailable: {type(exc).__name__}")}, 503)

    # ---- endpoints ---------------------------------------------------------------------------

    def do_openapi(self, request: Request) -> Response:
        return _json(OPENAPI, 200)

    def do_list(self, request: Request) -> Response:
        limit, after = request.args.get("limit", "200"), request.args.get("after")
        if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise _BadRequest("limit: expected a number from 1 to 1000")
        try:
            page = self.scheduler().page(int(limit), after)
        except ValueError as exc:  # a cursor this list never gave
            raise _BadRequest(str(exc)) from None
        return _json({"jobs": [_shown(job) for job in page["jobs"]], "after": page["after"], "rest": page["rest"]}, 200)

    def do_get(self, request: Request, job: str) -> Response:
        return _json(self._job(job), 200)

    def do_create(self, request: Request) -> Response:
        body = _body(request)
        job_id, spec = body.get("id"), body.get("spec")
        if not isinstance(job_id, str) or not isinstance(spec, dict):
            raise _BadRequest('expected {"id": "...", "spec": {...}, "replace": false}')
        self.scheduler().add(job_id, replace=body.get("replace") is True, **spec)
        return _json(self._job(job_id), 201)

    def do_replace(self, request: Request, job: str) -> Response:
        spec = _body(request).get("spec")
        if not isinstance(spec, dict):
            raise _BadRequest('expected {"spec": {...}}')
        self.scheduler().add(job, replace=True, **spec)
        return _json(self._job(job), 200)

    def do_delete(self, request: Request, job: str) -> Response:
        self.scheduler().remove(job)
        return Response(status=204)

    def do_pause(self, request: Request, job: str) -> Response:
        self.scheduler().pause(job, by="api")
        return _json({"id": job, "paused": True}, 200)

    def do_resume(self, request: Request, job: str) -> Response:
        self.scheduler().resume(job)
        return _json({"id": job, "paused": False}, 200)

    def do_run(self, request: Request, job: str) -> Response:
        return _json({"request_id": self.scheduler().run_now(job, by="api")}, 202)

    def do_history(self, request: Request, job: str) -> Response:
        limit = request.args.get("limit", "50")
        if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise _BadRequest("limit: expected a number from 1 to 1000")
        runs = self.scheduler().ledger.history(job, limit=int(limit))
        return _json({"runs": [{k: redact(v) if isinstance(v, str) else v for k, v in r.as_json().items()}
                               for r in runs]}, 200)  # fmt: skip

    def _job(self, job_id: str) -> dict[str, object]:
        return _shown(self.scheduler().job(job_id))


class _BadRequest(ValueError):
    pass


def _body(request: Request) -> dict[str, JSONValue]:
    try:
        body = json.loads(request.get_data(cache=True) or b"{}")
    except ValueError:
        raise _BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("expected a JSON object")
    return body


def _shown(job: Mapping[str, object]) -> dict[str, object]:
    """A job as the API shows it: times in ISO-8601 UTC, credentials in its spec masked."""
    spec = job.get("spec")
    if spec is not None:
        secrets = schedule_secrets({"jobs": {job["id"]: spec}}, {})
        spec = _masked(spec, secrets)
    nxt = job.get("next")
    return {**job, "next": iso_utc(nxt) if isinstance(nxt, datetime) else None, "spec": spec}


def _masked(value: object, secrets: frozenset[str]) -> object:
    if isinstance(value, dict):
        return {k: _masked(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, MASK)
        return redact(value)
    return value


def _json(data: object, status: int) -> Response:
    response = Response(json.dumps(data, indent=1, default=str), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


_JOB = {"$ref": "#/components/schemas/Job"}
_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _op(summary: str, ok: str, body: dict[str, object] | None = None, path_id: bool = True) -> dict[str, object]:
    op: dict[str, object] = {"summary": summary, "responses": {ok: {"description": "ok"}, "401": _ERR, "403": _ERR,
                                                             "404": _ERR, "422": _ERR}}  # fmt: skip
    if path_id:
        op["parameters"] = [{"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


_SPEC = {"type": "object", "description": "the keys of a schedule.yaml job (one trigger, one action, options)"}
OPENAPI: dict[str, object] = {
    "openapi": "3.0.3",
    "info": {"title": "dynoclock jobs", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Job": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "origin": {"type": "string", "enum": ["schedule", "api"]},
                    "kind": {"type": "string", "enum": ["cron", "every", "at"]},
                    "next": {"type": "string", "format": "date-time", "nullable": True},
                    "paused": {"type": "boolean"},
                    "spec": {**_SPEC, "nullable": True},
                },
            },
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "problems": {"type": "array", "items": {"type": "string"}}},
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/jobs": {
            "get": _op(
                "recurring jobs, then pending one-offs soonest first (?limit=200); the next page: ?after= the "
                "page's 'after'; 'rest': pending one-offs after this page",
                "200",
                path_id=False,
            ),
            "post": _op(
                "add a job (the same spec again changes nothing)",
                "201",
                {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "spec": _SPEC, "replace": {"type": "boolean"}},
                },
                path_id=False,
            ),
        },
        "/api/jobs/{job}": {
            "get": _op("one job", "200"),
            "put": _op("replace a job added from the app", "200", {"type": "object", "properties": {"spec": _SPEC}}),
            "delete": _op("remove a job added from the app", "204"),
        },
        "/api/jobs/{job}/pause": {"post": _op("pause", "200")},
        "/api/jobs/{job}/resume": {"post": _op("resume", "200")},
        "/api/jobs/{job}/run": {"post": _op("run now (the leading clock takes the request)", "202")},
        "/api/jobs/{job}/history": {"get": _op("the job's runs, newest first (?limit=50)", "200")},
    },
}
