"""The page a draft's link opens (digest `approval: true`): the issue as a sample reader
would see it, under a banner saying what it is and how to approve or skip it."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from syndicate.digest.render import personalise
from syndicate.store import DigestIssue

if TYPE_CHECKING:
    from syndicate.web.app import Web


async def draft_preview(web: Web, request: Request) -> Response:
    """A draft issue as a sample reader would see it: the link the editors are emailed.
    The signed link is the permission; the page names no reader."""
    issue_id = web.subscriber_for("draft", request.path_params["token"])
    if isinstance(issue_id, Response):
        return issue_id

    def load(session: Session) -> tuple[str, str] | None:
        issue = session.get(DigestIssue, issue_id)
        if issue is None:
            return None
        digest = web.config.digest(issue.digest)
        sample = {
            "name": digest.name_fallback,
            "display_name": "",
            "email": "reader@example.com",
            "unsubscribe_url": "#",
            "preferences_url": "#",
        }
        state = {
            DigestIssue.DRAFT: "a draft waiting for approval",
            DigestIssue.SKIPPED: "a draft an editor skipped",
        }.get(issue.status, "approved and sent")
        banner = (
            f"Issue {issue.number} of {digest.title}: {state}. "
            f"syndicate digest approve {digest.name} {issue.number} sends it; "
            f"syndicate digest skip {digest.name} {issue.number} drops it."
        )
        return personalise(issue.html, sample, escape=True), banner

    found = await web.db(load)
    if found is None:
        return web.bad_link("This draft no longer exists", "Look at the newer drafts.", 404)
    body, banner = found
    notice = (
        '<div style="font:14px sans-serif;background:#fff3cd;padding:8px 12px;'
        f'border-bottom:1px solid #e0c36a">{html.escape(banner)}</div>'
    )
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + notice, body, count=1)
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Robots-Tag": "noindex",
    }
    return HTMLResponse(body, headers=headers)
