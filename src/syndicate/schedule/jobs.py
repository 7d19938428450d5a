"""The functions APScheduler runs. They take the config file's path, not objects,
because the job store keeps jobs as text references between restarts."""

from __future__ import annotations

import logging
from collections.abc import Collection

from syndicate import config as configuration
from syndicate import pipeline
from syndicate.delivery import IssueBusy, TransportUnavailable, open_transport
from syndicate.feeds import build_feeds
from syndicate.pages import build_pages
from syndicate.store import Store

log = logging.getLogger("syndicate.schedule")


def gather_job(config_path: str) -> None:
    config = configuration.load(config_path)
    with Store(config.database_url) as store:
        report = pipeline.gather(config, store)
        log.info("gather: %s", report.summary())
        if report.changed:
            # Readers should not wait for the next feeds run to see a new review.
            log.info("feeds: %s", build_feeds(config, store).summary())
            log.info("pages: %s", build_pages(config, store).summary())
            # Readers who asked for each review as it comes out get it now.
            for digest in config.digests:
                if "instant" in digest.cadences:
                    _send(config, store, digest.name, cadences={"instant"})


def feeds_job(config_path: str) -> None:
    config = configuration.load(config_path)
    with Store(config.database_url) as store:
        log.info("feeds: %s", build_feeds(config, store).summary())
        log.info("pages: %s", build_pages(config, store).summary())


def digest_job(config_path: str, name: str) -> None:
    config = configuration.load(config_path)
    with Store(config.database_url) as store:
        _send(config, store, name)


def _send(
    config: configuration.Config,
    store: Store,
    name: str,
    cadences: Collection[str] | None = None,
) -> None:
    transport = open_transport(config)
    try:
        outcome = pipeline.send_digest(config, store, name, transport, cadences=cadences)
    except IssueBusy as busy:  # a person is sending it by hand: theirs finishes the issue
        log.warning("digest %s: skipped this run: %s", name, busy)
        return
    except TransportUnavailable as down:  # nothing was sent; the next run tries again
        log.error("digest %s: not sent this run: %s", name, down)
        return
    finally:
        transport.close()
    log.info("%s", outcome.summary())
