"""Email digests: choosing what is new, rendering it once per issue, recording the issue."""

from syndicate.digest.issues import (
    Draft,
    draft,
    issue_to_send,
    last_issue,
    record,
    unfinished_issue,
)
from syndicate.digest.render import RenderedIssue, TemplateError, personalise, render_issue

__all__ = [
    "Draft",
    "RenderedIssue",
    "TemplateError",
    "draft",
    "issue_to_send",
    "last_issue",
    "personalise",
    "record",
    "render_issue",
    "unfinished_issue",
]
