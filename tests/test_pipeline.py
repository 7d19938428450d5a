"""The whole pipeline through the CLI, as an editor runs it."""

from __future__ import annotations

import email
import email.policy

import feedparser

from tests.conftest import Site


def test_run_once_gathers_publishes_and_delivers(site: Site) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    result = site.cli("run", "--once")

    assert "10 new" in result.output
    rss = feedparser.parse((site.public / "feed.xml").read_bytes())
    atom = feedparser.parse((site.public / "atom.xml").read_bytes())
    assert rss.bozo == 0 and atom.bozo == 0
    assert len(rss.entries) == 10
    assert [e.id for e in rss.entries] == [e.id for e in atom.entries]

    emails = site.emails()
    assert len(emails) == 6  # one per subscriber in subscribers.csv
    message = email.message_from_bytes(emails[0].read_bytes(), policy=email.policy.default)
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/alternative",
        "text/plain",
        "text/html",
    ]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    again = site.cli("run", "--once")
    assert "nothing new" in again.output
    assert len(site.emails()) == 6
