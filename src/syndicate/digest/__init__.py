"""Email digests: choosing what is new, rendering it once per issue, recording the issue."""

from syndicate.digest.issues import (
    Draft,
    draft,
    last_issue,
    lock_digest,
    record,
    record_plan,
    unfinished_issues,
)
from syndicate.digest.plan import Plan, plan
from syndicate.digest.render import RenderedIssue, TemplateError, personalise, render_issue

__all__ = [
    "Draft",
    "Plan",
    "RenderedIssue",
    "TemplateError",
    "draft",
    "last_issue",
    "lock_digest",
    "personalise",
    "plan",
    "record",
    "record_plan",
    "render_issue",
    "unfinished_issues",
]
