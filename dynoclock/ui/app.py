"""The status page: a WSGI app (Werkzeug + Jinja2) that reads the clock's ledger from the same database.

Mount it in the web app (``DispatcherMiddleware(app.wsgi_app, {"/clock": make_app()})``) or run it alone
with ``python clock.py ui``. Pages are rendered on the server and work without JavaScript; a few lines of
script only refresh the data. Actions (run now, pause, resume) are POSTs that write to the ledger, where
the leading clock picks them up within a few seconds.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, MapAdapter, RequestRedirect, Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from dynoclock.config.loader import Job, Schedule, default_path, load_schedule
from dynoclock.config.problems import ConfigError
from dynoclock.observe.logs import short_error
from dynoclock.observe.redact import redact, redact_url
from dynoclock.observe.status import StateUnavailable, job_statuses
from dynoclock.state.controls import Controls
from dynoclock.state.ledger import Ledger
from dynoclock.state.location import state_url
from dynoclock.timesource import SYSTEM, Clock
from dynoclock.ui import views
from dynoclock.ui.access import Access, AuthCallable, Identity, browser_id, same_origin, set_browser_id
from dynoclock.ui.api import JobsApi
from dynoclock.ui.chart import durations_chart
from dynoclock.ui.guards import PageRequest, check_body, inside, secure_headers

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from dynoclock.observe.metrics import Metrics

PER_PAGE = 25
CHART_RUNS = 60
TEMPLATES = Path(__file__).resolve().parent / "templates"
NOTICES = {  # ?notice=... after an action: fixed texts, so the query string cannot inject any
    "run": "Run requested: the leading clock picks it up within a few seconds and records it as a manual run.",
    "paused": "Paused: the clock skips this job's scheduled runs until it is resumed.",
    "resumed": "Resumed: the job runs on its schedule again.",
    "deleted": "Deleted: the job added from the app starts no more runs; its history stays.",
}


def make_app(
    schedule_path: str | None = None,
    ledger: Ledger | None = None,
    token: str | None = None,
    read_token: str | None = None,
    auth: AuthCallable | None = None,
    clock: Clock = SYSTEM,
) -> StatusApp:
    """The status page as a WSGI app.

    ``token`` / ``read_token`` default to $CLOCK_UI_TOKEN (read-write) and $CLOCK_UI_READ_TOKEN (read-only);
    ``auth(environ)`` may return "write", "read" or None to let the host app decide. With none of them the
    page is off: every request gets 403 and a page saying how to turn it on. ``clock`` says what time it is.
    """
    return StatusApp(schedule_path or default_path(), ledger, Access.from_env(token, read_token, auth), clock)


@dataclass
class Ctx:
    """One request: what every page needs to render."""

    request: Request
    adapter: MapAdapter
    sid: str
    identity: Identity | None = None
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def url(self, endpoint: str, **values: str | int) -> str:
        return self.adapter.build(endpoint, values)


class StatusApp:
    def __init__(self, schedule_path: str, ledger: Ledger | None, access: Access, clock: Clock = SYSTEM):
        self.access = access
        self.clock = clock
        self.problems: list[str] = []
        try:
            self.schedule = load_schedule(schedule_path, view=True)  # when jobs run; their actions need no env
        except ConfigError as exc:  # a broken schedule must not take the web app down: show it instead
            self.schedule = Schedule(schedule_path, ZoneInfo("UTC"), {})
            self.problems = [str(problem) for problem in exc.problems]
        redact.add(self.schedule.secrets)
        redact.add(token.decode() for token, _ in access.tokens)  # tokens given to make_app, not only $CLOCK_UI_*
        redact.add_from_env()
        self._ledger = ledger
        self._schema_ready = False
        self.api = JobsApi(access, lambda: (self.ledger().url, self.schedule.jobs), clock)
        self._metrics: Metrics | None = None  # made at the first scrape
        self.jinja = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.url_map = Map(
            [
                Rule("/", endpoint="index"),
                Rule("/jobs/<job>", endpoint="job"),
                Rule("/jobs/<job>/run", endpoint="run", methods=["POST"]),
                Rule("/jobs/<job>/pause", endpoint="pause", methods=["POST"]),
                Rule("/jobs/<job>/resume", endpoint="resume", methods=["POST"]),
                Rule("/jobs/<job>/delete", endpoint="delete", methods=["POST"]),
                Rule("/login", endpoint="login", methods=["GET", "POST"]),
                Rule("/logout", endpoint="logout", methods=["POST"]),
                Rule("/metrics", endpoint="metrics"),
            ]
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.respond(PageRequest(environ))(environ, start_response)

    # ---- the request pipeline ----------------------------------------------------------------

    def respond(self, request: Request) -> Response:
        if request.path.startswith("/api/"):  # the jobs as JSON (ui/api.py)
            return self.api.respond(request)
        adapter = self.url_map.bind_to_environ(request.environ)
        sid, new_sid = browser_id(request)
        ctx = Ctx(request, adapter, sid)
        try:
            check_body(request)
            endpoint, args = adapter.match()
            response = self.guarded(ctx, str(endpoint), args)
        except RequestRedirect as exc:
            response = redirect(exc.new_url, 308)
        except HTTPException as exc:
            response = self.message(ctx, exc.code or 500, exc.name, exc.description or "")
        if new_sid:
            set_browser_id(response, request, sid)
        secure_headers(response, ctx.nonce)
        return response

    def guarded(self, ctx: Ctx, endpoint: str, args: Mapping[str, str]) -> Response:
        """Access, then Origin, role and CSRF for POSTs, then the view."""
        request = ctx.request
        if not self.access.enabled:
            return self.render(ctx, "off.html", 403)
        if endpoint == "login":
            return self.login(ctx)
        ctx.identity = self.access.identify(request)
        if ctx.identity is None:
            if self.access.has_tokens:
                response = self.login_form(ctx, 401, request.headers.get("Authorization") is not None)
                response.headers["WWW-Authenticate"] = 'Bearer realm="dynoclock"'
                return response
            return self.message(ctx, 403, "Forbidden", "The web app does not let you see the clock's status page.")
        if request.method == "POST":
            if not same_origin(request):
                return self.message(ctx, 403, "Forbidden", "This request came from another site.")
            if endpoint != "logout" and ctx.identity.role != "write":
                return self.message(ctx, 403, "Forbidden", "Your access is read-only.")
            if not self.access.csrf_ok(request.form.get("csrf"), ctx.sid, ctx.identity.credential):
                return self.message(
                    ctx, 400, "Bad Request", "The form's CSRF token is missing or wrong: reload the page and try again."
                )
        view: Callable[..., Response] = getattr(self, f"view_{endpoint}")
        try:
            return view(ctx, **args)
        except StateUnavailable as exc:
            return self.message(ctx, 503, "State database unavailable", str(exc))

    def ledger(self) -> Ledger:
        """The state database, schema ensured once (the page may be opened before any clock ever ran)."""
        try:
            if self._ledger is None:
                self._ledger = Ledger(state_url())
            if not self._schema_ready:
                self._ledger.ensure_schema()
                self._schema_ready = True
        except Exception as exc:
            raise self._unavailable(exc) from None
        return self._ledger

    def _unavailable(self, exc: Exception) -> StateUnavailable:
        where = self._ledger.location if self._ledger else redact_url(state_url())
        return StateUnavailable(redact(f"cannot read the state database {where}: {short_error(exc)}"))

    # ---- rendering ---------------------------------------------------------------------------

    def render(self, ctx: Ctx, template: str, status: int = 200, **values: object) -> Response:
        identity = ctx.identity
        notice = NOTICES.get(ctx.request.args.get("notice", ""))
        context = {
            "url": ctx.url,
            "role": identity.role if identity else None,
            "can_write": identity is not None and identity.role == "write",
            "via": identity.via if identity else None,
            "csrf": self.access.csrf_token(ctx.sid, identity.credential) if identity else "",
            "nonce": ctx.nonce,
            "notice": notice,
            "notice_job": job if notice and (job := ctx.request.args.get("job", "")) in self.schedule.jobs else "",
            "problems": [redact(p) for p in self.problems],
            "now": views.when(self.clock.now()),
            **values,
        }
        html = self.jinja.get_template(template).render(context)
        return Response(html, status=status, mimetype="text/html")

    def message(self, ctx: Ctx, status: int, title: str, text: str) -> Response:
        return self.render(ctx, "message.html", status, title=title, text=text)

    def login_form(self, ctx: Ctx, status: int = 200, failed: bool = False) -> Response:
        back = ctx.request.full_path.rstrip("?") if ctx.request.method == "GET" else "/"
        if back.startswith("/login"):
            back = "/"
        csrf = self.access.csrf_token(ctx.sid, "login")
        return self.render(ctx, "login.html", status, failed=failed, back=back, login_csrf=csrf)

    # ---- views -------------------------------------------------------------------------------

    def login(self, ctx: Ctx) -> Response:
        request = ctx.request
        if not self.access.has_tokens:
            return self.message(ctx, 404, "Not Found", "Sign-in is handled by the web app.")
        if request.method == "GET":
            return self.login_form(ctx)
        if not same_origin(request):
            return self.message(ctx, 403, "Forbidden", "This request came from another site.")
        if not self.access.csrf_ok(request.form.get("csrf"), ctx.sid, "login"):
            return self.message(ctx, 400, "Bad Request", "The form expired: reload the page and sign in again.")
        role = self.access.check_token(request.form.get("token", ""))
        if role is None:
            return self.login_form(ctx, 401, failed=True)
        response = redirect(inside(ctx.adapter, request.form.get("next", "/")), 303)
        self.access.log_in(response, request, role)
        return response

    def view_logout(self, ctx: Ctx) -> Response:
        response = redirect(ctx.url("login") if self.access.has_tokens else ctx.url("index"), 303)
        self.access.log_out(response, ctx.request)
        return response

    def view_index(self, ctx: Ctx) -> Response:
        ledger = self.ledger()
        now = self.clock.now()
        try:
            controls = Controls(ledger)
            statuses = job_statuses(self.schedule, ledger, now)
            paused, pending = controls.paused(), views.pending_by_job(controls.pending_requests())
            clocks = views.clock_state(ledger.clocks(), now)
        except Exception as exc:
            raise self._unavailable(exc) from None
        rows = [views.job_row(status, paused, pending, now) for status in statuses]
        return self.render(ctx, "index.html", jobs=rows, clocks=clocks)

    def view_metrics(self, ctx: Ctx) -> Response:
        """Prometheus text, for any signed-in role (a scraper sends ``Authorization: Bearer <read token>``)."""
        from dynoclock.observe.metrics import CONTENT_TYPE, Metrics

        ledger = self.ledger()
        try:
            self._metrics = self._metrics or Metrics(self.schedule, ledger, self.clock)
            return Response(self._metrics.text(), content_type=CONTENT_TYPE)
        except Exception as exc:
            raise self._unavailable(exc) from None

    def view_job(self, ctx: Ctx, job: str) -> Response:
        ledger = self.ledger()
        now = self.clock.now()
        spec = self.schedule.jobs.get(job) or self._api_job(job)
        try:
            page = max(int(ctx.request.args.get("page", "1")), 1)
        except ValueError:
            page = 1
        try:
            runs = ledger.history(job, limit=PER_PAGE + 1, offset=(page - 1) * PER_PAGE)
            recent = ledger.history(job, limit=CHART_RUNS)
            row = None
            if spec is not None:
                controls = Controls(ledger)
                one = dataclasses.replace(self.schedule, jobs={job: spec})
                pending = views.pending_by_job(controls.pending_requests())
                row = views.job_row(job_statuses(one, ledger, now, api=False)[0], controls.paused(), pending, now)
            clocks = views.clock_state(ledger.clocks(), now)
        except Exception as exc:
            raise self._unavailable(exc) from None
        if spec is None and not runs and page == 1:
            return self.message(ctx, 404, "Not Found", f"No job {job!r} in the schedule, and no runs of it.")
        charted = [run for run in reversed(recent) if run.status != "claimed"]
        return self.render(
            ctx, "job.html", job_id=job, row=row, clocks=clocks,
            runs=[views.run_row(run, spec) for run in runs[:PER_PAGE]],
            page=page, has_next=len(runs) > PER_PAGE, chart=durations_chart(charted), chart_count=len(charted),
        )  # fmt: skip

    def view_run(self, ctx: Ctx, job: str) -> Response:
        spec = self._job_or_404(ctx, job)
        if not spec.runnable:
            return self.message(ctx, 409, "Conflict", f"Job {job!r} is disabled and its action names unset variables.")
        self._write(lambda ledger: Controls(ledger, self.schedule.jobs).request_run(job, self._by(ctx)))
        return self._back(ctx, job, "run")

    def view_pause(self, ctx: Ctx, job: str) -> Response:
        self._job_or_404(ctx, job)
        self._write(lambda ledger: Controls(ledger, self.schedule.jobs).pause(job, self._by(ctx)))
        return self._back(ctx, job, "paused")

    def view_resume(self, ctx: Ctx, job: str) -> Response:
        self._job_or_404(ctx, job)
        self._write(lambda ledger: Controls(ledger, self.schedule.jobs).resume(job))
        return self._back(ctx, job, "resumed")

    def view_delete(self, ctx: Ctx, job: str) -> Response:
        """An api job (added from the app) only: schedule.yaml's are changed in schedule.yaml."""
        from dynoclock.client import Scheduler

        if self._api_job(job) is None:
            raise NotFound(f"No job {job!r} added from the app.")
        self._write(lambda ledger: Scheduler(ledger.url, self.clock).remove(job))
        return redirect(f"{ctx.url('index')}?{urlencode({'notice': 'deleted', 'job': job})}", 303)

    # ---- helpers -----------------------------------------------------------------------------

    def _api_job(self, job: str) -> Job | None:
        from dynoclock.client import job_of
        from dynoclock.state.jobstore import JobStore

        if job in self.schedule.jobs:
            return None
        ledger = self.ledger()
        try:
            with ledger.engine.connect() as conn:
                row = JobStore(ledger).get(conn, [job]).get(job)
        except Exception as exc:
            raise self._unavailable(exc) from None
        return None if row is None or row.removed or row.origin != "api" else job_of(row)

    def _job_or_404(self, ctx: Ctx, job: str) -> Job:
        spec = self.schedule.jobs.get(job) or self._api_job(job)
        if spec is None:
            raise NotFound(f"No job {job!r} in the schedule.")
        return spec

    def _write(self, action: Callable[[Ledger], object]) -> None:
        ledger = self.ledger()
        try:
            action(ledger)
        except Exception as exc:
            raise self._unavailable(exc) from None

    def _by(self, ctx: Ctx) -> str:
        user = ctx.request.environ.get("REMOTE_USER")
        via = ctx.identity.via if ctx.identity else "?"
        return (f"status page: {user}" if user else f"status page ({via})")[:200]

    def _back(self, ctx: Ctx, job: str, notice: str) -> Response:
        """303 to the page the form was on, with a notice saying what happens next."""
        page = ctx.url("job", job=job) if ctx.request.form.get("back") == "job" else ctx.url("index")
        return redirect(f"{page}?{urlencode({'notice': notice, 'job': job})}", 303)
