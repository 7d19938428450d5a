"""The reader's web side: sign up, confirm, unsubscribe, preferences, and the output
folder (feeds, archive) as static files.

Every link in an email carries a signed token (syndicate.tokens) bound to one subscriber
and one purpose, so these pages need no login and no cookie. Endpoints are async for the
request body and hand the database work to Starlette's thread pool.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route

from syndicate import subscribers as readers
from syndicate.config import Config, DigestConfig, MissingSecret, secret
from syndicate.delivery import TransportUnavailable, events
from syndicate.digest.cadence import InvalidRhythm, rhythm_for, zone_names
from syndicate.pages.layout import page_environment, render_page, stylesheet
from syndicate.store import Store, Subscriber, Subscription
from syndicate.tokens import (
    ExpiredToken,
    InvalidToken,
    make_token,
    read_confirm_token,
    read_token,
)
from syndicate.web.drafts import draft_preview
from syndicate.web.files import OutputFiles
from syndicate.web.ratelimit import RateLimit, address_key, client_key
from syndicate.web.signup import (
    NOT_BY_READER,
    SignUp,
    confirm,
    record_signup,
    send_confirmation,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# What the preferences page calls each cadence; {days}: the weekly digest's send_day.
CADENCE_LABELS = {
    "instant": "Each review as it is published",
    "daily": "A daily digest",
    "weekly": "A weekly digest ({days})",
}


class Web:
    """The handlers, with what they share: config, store, signing key, templates, limits."""

    def __init__(self, config: Config, store: Store, secret_key: str) -> None:
        self.config = config
        self.store = store
        self.secret_key = secret_key
        self.templates: jinja2.Environment = page_environment(config)
        # Where the output folder (stylesheet, archive) is, as seen by the reader's browser.
        self.root = urlsplit(config.public_base_url).path or "/"
        self.per_address = RateLimit(config.server.signups_per_address)
        self.per_ip = RateLimit(config.server.signups_per_ip)
        self._zones: list[str] | None = None

    @property
    def zones(self) -> list[str]:
        """The time zones a reader may pick (read from the zone database once)."""
        if self._zones is None:
            self._zones = zone_names()
        return self._zones

    # --- shared -----------------------------------------------------------------------

    def page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("error", "")
        body = render_page(
            self.config,
            f"web/{template}.html.j2",
            self.root,
            self.templates,
            base=self.config.public_base_url,
            **values,
        )
        # Nothing personal may be kept by a shared cache or shown in another's referer.
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        return HTMLResponse(body, status_code=status, headers=headers)

    def bad_link(self, problem: str, advice: str, status: int = 400) -> HTMLResponse:
        return self.page("invalid_link", status, problem=problem, advice=advice)

    def gone(self) -> HTMLResponse:
        """A valid link for a subscriber who has since been deleted."""
        return self.bad_link("This address is no longer on the list", "Sign up again.", 404)

    async def db(self, work: Callable[..., T], *args: Any) -> T:
        def in_session() -> T:
            with self.store.session() as session:
                return work(session, *args)

        return await run_in_threadpool(in_session)

    def subscriber_for(self, purpose: str, token: str) -> int | HTMLResponse:
        try:
            return read_token(self.secret_key, purpose, token)  # type: ignore[arg-type]
        except InvalidToken:
            return self.bad_link(
                f"This {purpose} link is not valid: it may have been cut short or changed",
                "Copy the whole link from the email, or use the link in a newer email.",
            )

    def digest_choices(self) -> list[Any]:
        return list(self.config.digests)

    def client_ip(self, request: Request) -> str:
        # uvicorn has already replaced the client with X-Forwarded-For's when, and only
        # when, the request came through one of server.trusted_proxies.
        return client_key(request.client.host) if request.client else "unknown"

    def here(self, request: Request) -> str:
        """This page's URL as the reader's browser sees it (under base_url's path)."""
        return self.root + request.url.path.lstrip("/")

    # --- subscribe and confirm ----------------------------------------------------------

    async def subscribe_form(self, request: Request) -> Response:
        digests = self.digest_choices()
        chosen = [d.name for d in digests] if len(digests) == 1 else []
        return self.page("subscribe", email="", name="", digests=digests, chosen=chosen, error="")

    async def subscribe(self, request: Request) -> Response:
        form = await request.form()
        email = str(form.get("email", "")).strip()
        name = " ".join(str(form.get("name", "")).split())[:200]
        known = {d.name for d in self.config.digests}
        chosen = [d for d in dict.fromkeys(str(v) for v in form.getlist("digest")) if d in known]

        def again(error: str, status: int = 400) -> Response:
            return self.page(
                "subscribe",
                status,
                email=email,
                name=name,
                digests=self.digest_choices(),
                chosen=chosen,
                error=error,
            )

        try:
            address = readers.normalise(email)
        except readers.InvalidAddress as exc:
            return again(f"That is not an email address we can send to: {exc}")
        if not chosen:
            return again("Choose at least one of the emails below.")
        ip_ok = self.per_ip.allow(self.client_ip(request))
        if not ip_ok or not self.per_address.allow(address_key(address)):
            log.warning("sign-up refused: over the hourly limit (%s)", self.client_ip(request))
            return again("Too many sign-ups from here in the last hour; try again later.", 429)

        signup = SignUp(address, name, chosen)
        subscriber_id = await self.db(lambda s: record_signup(s, signup))
        if subscriber_id is not None:  # None: an address that must not be mailed
            try:
                await run_in_threadpool(
                    send_confirmation, self.config, self.secret_key, subscriber_id, signup
                )
            except (TransportUnavailable, MissingSecret) as exc:
                log.error("sign-up of %s: the confirmation email cannot be sent: %s", address, exc)
                return again("We cannot send email right now; please try again later.", 503)
        return self.page("check_inbox", email=address, days=self.config.server.confirm_days)

    def read_confirmation(self, token: str) -> tuple[int, list[str]] | HTMLResponse:
        try:
            return read_confirm_token(
                self.secret_key, token, timedelta(days=self.config.server.confirm_days)
            )
        except ExpiredToken:
            return self.bad_link(
                "This confirmation link has expired",
                "Sign up again and follow the new link within "
                f"{self.config.server.confirm_days} days.",
                410,
            )
        except InvalidToken:
            return self.bad_link(
                "This confirmation link is not valid: it may have been cut short or changed",
                "Copy the whole link from the email, or sign up again.",
            )

    def titles(self, names: list[str]) -> list[str]:
        known = {d.name: d.title for d in self.config.digests}
        return [known[n] for n in names if n in known]

    async def confirm_page(self, request: Request) -> Response:
        # Following the link shows a button rather than confirming at once: mail
        # scanners fetch every link in an email, and must not subscribe anyone.
        found = self.read_confirmation(request.path_params["token"])
        if isinstance(found, Response):
            return found
        subscriber_id, digests = found
        subscriber = await self.db(lambda s: s.get(Subscriber, subscriber_id))
        if subscriber is None:
            return self.gone()
        return self.page(
            "confirm",
            email=subscriber.email,
            digests=self.titles(digests),
            action=self.here(request),
        )

    async def confirm(self, request: Request) -> Response:
        found = self.read_confirmation(request.path_params["token"])
        if isinstance(found, Response):
            return found
        subscriber_id, digests = found
        known = {d.name for d in self.config.digests}
        try:
            email = await self.db(lambda s: confirm(s, subscriber_id, digests, known))
        except LookupError:
            return self.gone()
        log.info("%s confirmed %s", email, ", ".join(digests))
        return self.page("confirmed", email=email, digests=self.titles(digests))

    # --- unsubscribe and preferences ----------------------------------------------------

    def preferences_url(self, subscriber_id: int) -> str:
        token = make_token(self.secret_key, "preferences", subscriber_id)
        return f"{self.config.public_base_url}preferences/{token}"

    async def unsubscribe_page(self, request: Request) -> Response:
        found = self.subscriber_for("unsubscribe", request.path_params["token"])
        if isinstance(found, Response):
            return found
        subscriber = await self.db(lambda s: s.get(Subscriber, found))
        if subscriber is None:
            return self.page("unsubscribed", email="this address", preferences_url="#")
        return self.page(
            "unsubscribe",
            email=subscriber.email,
            action=self.here(request),
            preferences_url=self.preferences_url(found),
        )

    async def unsubscribe(self, request: Request) -> Response:
        """RFC 8058 one-click (body `List-Unsubscribe=One-Click`, from a mail client) and
        the page's button alike: unsubscribed at once, answered 200."""
        found = self.subscriber_for("unsubscribe", request.path_params["token"])
        if isinstance(found, Response):
            return found
        email = await self.db(lambda s: unsubscribe_all(s, found, "one-click unsubscribe"))
        if email is None:  # deleted since: nothing to stop, and nothing to tell a stranger
            return self.page("unsubscribed", email="this address", preferences_url="#")
        log.info("%s unsubscribed", email)
        return self.page("unsubscribed", email=email, preferences_url=self.preferences_url(found))

    async def preferences_page(self, request: Request) -> Response:
        found = self.subscriber_for("preferences", request.path_params["token"])
        if isinstance(found, Response):
            return found
        return await self.show_preferences(request, found, saved=False)

    async def show_preferences(
        self,
        request: Request,
        subscriber_id: int,
        saved: bool,
        error: str = "",
        status: int = 200,
    ) -> Response:
        subscriber = await self.db(lambda s: s.get(Subscriber, subscriber_id))
        if subscriber is None:
            return self.gone()
        active = subscriber.status == Subscriber.ACTIVE
        stored = {s.digest: s for s in subscriber.subscriptions}
        return self.page(
            "preferences",
            status,
            email=subscriber.email,
            name=subscriber.name,
            digests=self.digest_choices(),
            chosen=subscriber.digests if active else [],
            rhythms={d.name: self.rhythm_view(d, stored.get(d.name)) for d in self.config.digests},
            active=active,
            saved=saved,
            error=error,
            action=self.here(request),
        )

    def rhythm_view(self, digest: DigestConfig, stored: Subscription | None) -> dict[str, Any]:
        """What the preferences page shows for one digest's cadence, hour and zone."""
        cadence, hour, zone = (
            (stored.cadence, stored.send_hour, stored.timezone) if stored else (None, None, None)
        )
        usual = rhythm_for(self.config, digest)
        days = digest.send_day.capitalize() + "s"
        return {
            "cadences": [(c, CADENCE_LABELS[c].format(days=days)) for c in digest.cadences],
            "cadence": rhythm_for(self.config, digest, cadence).cadence,
            # The digest goes at readers' hours; else each issue when the schedule runs.
            "timed": digest.send_hour is not None,
            "only_instant": list(digest.cadences) == ["instant"],
            "hour": "" if hour is None else str(hour),
            "usual_hour": "" if usual.send_hour is None else f"{usual.send_hour:02d}:00",
            "zone": zone or "",
            "usual_zone": usual.timezone,
            # A zone imported under another name (US/Eastern) is still offered.
            "zones": self.zones if not zone or zone in self.zones else [zone, *self.zones],
            # No zone chosen yet: the page's script may preselect the browser's.
            "guess_zone": zone is None,
        }

    def posted_rhythms(self, form: Any, chosen: list[str]) -> dict[str, dict[str, Any]]:
        """Per chosen digest, the rhythm fields the form sent, checked: {field: value to
        store}. A field the form did not send is left out (kept as it is); the hour and
        zone of a digest sent on the editor's schedule are not the reader's to set.
        Raises InvalidRhythm with a message for the reader."""
        found: dict[str, dict[str, Any]] = {}
        for digest in self.config.digests:
            if digest.name not in chosen:
                continue
            fields = ["cadence"] + (
                ["send_hour", "timezone"] if digest.send_hour is not None else []
            )
            given = {
                field: str(form.get(f"{field}-{digest.name}"))
                for field in fields
                if form.get(f"{field}-{digest.name}") is not None
            }
            try:
                choice = readers.check_rhythm([digest], **given)
            except InvalidRhythm as exc:
                raise InvalidRhythm(
                    exc.field, f"{digest.title}: {exc}. Nothing was changed."
                ) from None
            found[digest.name] = {field: getattr(choice, field) for field in given}
        return found

    async def save_preferences(self, request: Request) -> Response:
        found = self.subscriber_for("preferences", request.path_params["token"])
        if isinstance(found, Response):
            return found
        form = await request.form()
        known = [d.name for d in self.config.digests]
        chosen = [d for d in known if d in {str(v) for v in form.getlist("digest")}]
        name = " ".join(str(form.get("name", "")).split())[:200]
        if form.get("action") == "unsubscribe" or not chosen:
            email = await self.db(lambda s: unsubscribe_all(s, found, "unsubscribed from all"))
            if email is None:
                return self.gone()
            return self.page(
                "unsubscribed", email=email, preferences_url=self.preferences_url(found)
            )
        try:
            rhythms = self.posted_rhythms(form, chosen)
        except InvalidRhythm as exc:
            return await self.show_preferences(request, found, False, str(exc), 400)
        done = await self.db(lambda s: save_choices(s, found, chosen, name, rhythms, self.config))
        if done is None:
            return self.gone()
        if not done:
            return self.bad_link(
                "This address cannot be subscribed again from here",
                "Mail to it bounced, or it was taken off the list by the editors: write to "
                f"{self.config.delivery.reply_to or self.config.delivery.sender.email}.",
                409,
            )
        return await self.show_preferences(request, found, saved=True)

    async def stylesheet(self, request: Request) -> Response:
        """The pages' stylesheet, for a site whose pages have not been written yet."""
        built = self.config.resolve(self.config.feeds.output) / "static" / "style.css"
        if built.is_file():
            return FileResponse(built, media_type="text/css")
        return Response(stylesheet(self.templates), media_type="text/css")

    async def home(self, request: Request) -> Response:
        """The output folder's own index page if it has one, else the archive or sign-up."""
        output = self.config.resolve(self.config.feeds.output)
        if (output / "index.html").is_file():
            return FileResponse(output / "index.html")
        target = "archive/" if (output / "archive" / "index.html").is_file() else "subscribe"
        return RedirectResponse(self.root + target, status_code=302)

    # --- SendGrid -------------------------------------------------------------------

    async def sendgrid_events(self, request: Request) -> Response:
        body = await request.body()
        answer = await run_in_threadpool(
            events.handle_webhook, self.config, self.store, body, dict(request.headers)
        )
        return PlainTextResponse(answer.message, status_code=answer.status)


def unsubscribe_all(session: Any, subscriber_id: int, reason: str) -> str | None:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    if subscriber.status == Subscriber.ACTIVE or subscriber.status == Subscriber.PENDING:
        subscriber.status = Subscriber.UNSUBSCRIBED
        subscriber.status_reason = reason
        subscriber.status_changed_at = datetime.now(UTC)
    return str(subscriber.email)


def save_choices(
    session: Any,
    subscriber_id: int,
    chosen: list[str],
    name: str,
    rhythms: dict[str, dict[str, Any]] | None = None,
    config: Config | None = None,
) -> bool | None:
    """Save a reader's choices: None when there is no such subscriber, False when the
    address may not be resubscribed by its reader (bounced, complained, removed).

    `rhythms` is Web.posted_rhythms': per digest, the checked fields to store. A cadence
    equal to the one the reader already gets is left as stored, so saving the page
    unchanged does not turn "the digest's default" into a fixed choice."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    if subscriber.status in NOT_BY_READER:
        return False
    subscriber.name = name
    if subscriber.status != Subscriber.ACTIVE:
        # The signed link proves the address's owner chose to receive these again.
        subscriber.status = Subscriber.ACTIVE
        subscriber.status_reason = "resubscribed on the preferences page"
        subscriber.status_changed_at = datetime.now(UTC)
    subscriber.subscriptions = [
        next((s for s in subscriber.subscriptions if s.digest == d), None) or Subscription(digest=d)
        for d in chosen
    ]
    for subscription in subscriber.subscriptions:
        fields = dict((rhythms or {}).get(subscription.digest, {}))
        if "cadence" in fields and config is not None:
            digest = config.digest(subscription.digest)
            if fields["cadence"] == rhythm_for(config, digest, subscription.cadence).cadence:
                del fields["cadence"]
        for field, value in fields.items():
            setattr(subscription, field, value)
    return True


def create_app(config: Config, store: Store | None = None) -> Starlette:
    """The web app. Raises MissingSecret when the link-signing key is not set: every
    page here depends on it, so the server does not start without it."""
    secret_key = secret(config.site.secret_env, "key that signs the links in emails")
    own_store = store is None
    store = store or Store(config.database_url)
    web = Web(config, store, secret_key)
    output = config.resolve(config.feeds.output)
    routes = [
        Route("/subscribe", web.subscribe_form, methods=["GET"]),
        Route("/subscribe", web.subscribe, methods=["POST"]),
        Route("/confirm/{token}", web.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", web.confirm, methods=["POST"]),
        Route("/unsubscribe/{token}", web.unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", web.unsubscribe, methods=["POST"]),
        Route("/preferences/{token}", web.preferences_page, methods=["GET"]),
        Route("/preferences/{token}", web.save_preferences, methods=["POST"]),
        Route("/drafts/{token}", partial(draft_preview, web), methods=["GET"]),
        Route("/webhooks/sendgrid", web.sendgrid_events, methods=["POST"]),
        Route("/healthz", lambda request: PlainTextResponse("ok"), methods=["GET"]),
        Route("/", web.home, methods=["GET", "HEAD"]),
        Route("/static/style.css", web.stylesheet, methods=["GET", "HEAD"]),
        Mount("/", app=OutputFiles(directory=output, html=True, check_dir=False)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if own_store:
            store.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.state.web = web
    return app
