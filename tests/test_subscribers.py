"""The reader list: `syndicate subscribers add/remove/list/import/export`, and the signed
tokens in every email's unsubscribe and preference links.

Everything goes through the CLI against the site's real SQLite database, as an editor
would run it; the list is read back with `subscribers list` or `export`, not from tables.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer

from syndicate import subscribers as readers
from syndicate.store import Store
from syndicate.tokens import InvalidToken, make_token, read_token
from tests.conftest import SECRET, Site, make_site


def listed(site: Site, status: str = "active") -> dict[str, tuple[str, str, str]]:
    """`subscribers list`, as {email: (name, digests, status)}."""
    return {email: row[:3] for email, row in listed_rhythms(site, status).items()}


def listed_rhythms(site: Site, status: str = "active") -> dict[str, tuple[str, str, str, str]]:
    """`subscribers list`, as {email: (name, digests, status, rhythm)}."""
    result = site.cli("subscribers", "list", "--status", status)
    rows = {}
    for line in result.stdout.splitlines():
        email, name, digests, state, rhythm = line.split("\t")
        rows[email] = (name, digests, state, rhythm)
    return rows


def write_csv(site: Site, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = site.root / name
    path.write_text(text, encoding=encoding)
    return path


def exported(site: Site) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(site.cli("subscribers", "export").stdout)))


# --- add, remove, list -----------------------------------------------------------------


def test_add_normalises_the_address_and_a_second_add_updates_the_same_reader(
    site: Site,
) -> None:
    added = site.cli("subscribers", "add", "  Ada.Whitfield@EXAMPLE.Com\t", "--name", "Ada")
    assert "Added ada.whitfield@example.com (weekly)" in added.output

    again = site.cli("subscribers", "add", "ada.whitfield@example.com", "--name", "Ada W.")
    assert "Updated ada.whitfield@example.com" in again.output
    assert listed(site) == {"ada.whitfield@example.com": ("Ada W.", "weekly", "active")}


@pytest.mark.parametrize(
    ("address", "norm"),
    [
        (" Ada@Example.COM ", "ada@example.com"),
        ("\tkwame.boateng@EXAMPLE.net\n", "kwame.boateng@example.net"),
        ("leser@BÜCHER.example", "leser@bücher.example"),
    ],
)
def test_addresses_are_normalised_to_one_form(address: str, norm: str) -> None:
    assert readers.normalise(address) == norm


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("not-an-address", "@"),
        ("ada@example..com", "period"),
        ("ada smith@example.com", "invalid characters"),
    ],
)
def test_add_refuses_an_invalid_address_and_says_why(site: Site, address: str, why: str) -> None:
    result = site.cli("subscribers", "add", address, ok=False)
    assert "is not a valid email address" in result.output
    assert why in result.output
    assert "Traceback" not in result.output
    assert listed(site, "all") == {}


def test_add_refuses_a_digest_that_is_not_configured(site: Site) -> None:
    result = site.cli("subscribers", "add", "ada@example.com", "--digest", "daily", ok=False)
    assert "unknown digest(s): daily (configured: weekly)" in result.output
    assert listed(site, "all") == {}


def test_remove_stops_mail_but_keeps_the_address_suppressed(site: Site) -> None:
    site.cli("subscribers", "add", "ada@example.com", "--name", "Ada")
    site.cli("subscribers", "add", "kwame@example.net")

    removed = site.cli("subscribers", "remove", "ADA@example.com ")
    assert "Removed ada@example.com" in removed.output
    assert set(listed(site)) == {"kwame@example.net"}
    assert listed(site, "removed") == {"ada@example.com": ("Ada", "weekly", "removed")}
    assert set(listed(site, "all")) == {"ada@example.com", "kwame@example.net"}

    unknown = site.cli("subscribers", "remove", "nobody@example.com", ok=False)
    assert "no subscriber with the address nobody@example.com" in unknown.output

    # The editor can bring a removed reader back explicitly.
    back = site.cli("subscribers", "add", "ada@example.com")
    assert "Re-activated ada@example.com" in back.output
    assert listed(site)["ada@example.com"] == ("Ada", "weekly", "active")


def test_list_counts_on_stderr_so_stdout_stays_a_clean_table(site: Site) -> None:
    site.cli("subscribers", "add", "ada@example.com", "--name", "Ada")
    site.cli("subscribers", "add", "film.nerd@example.com")
    result = site.cli("subscribers", "list")
    assert result.stdout.splitlines() == [
        "ada@example.com\tAda\tweekly\tactive\tweekly",
        "film.nerd@example.com\t-\tweekly\tactive\tweekly",
    ]
    assert "2 subscriber(s)." in result.stderr


# --- import ----------------------------------------------------------------------------

MESSY_CSV = """\
email,name,digests
ada@example.com,Ada Whitfield,weekly
not-an-address,Bad Row,weekly
 Kwame.Boateng@EXAMPLE.NET ,Kwame Boateng,
zoe@example.org,Zoë Martín,monthly
,Nobody,weekly
pat@example.com,"O'Brien, Pat",weekly
ADA@example.com,,weekly
"""


def test_import_reports_each_bad_row_by_line_and_imports_the_good_ones(site: Site) -> None:
    path = write_csv(site, "messy.csv", MESSY_CSV)
    result = site.cli("subscribers", "import", "messy.csv", ok=False)  # exit 1: rows skipped

    errors = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(errors) == 3
    assert f"{path.name}: line 3: 'not-an-address' is not a valid email address" in errors[0]
    assert f"{path.name}: line 5: unknown digest(s) monthly" in errors[1]
    assert f"{path.name}: line 6: '' is not a valid email address" in errors[2]
    assert "3 added, 1 merged" in result.stdout
    assert "3 row(s) skipped" in result.stdout

    # The good rows are in; the repeated Ada (other case, no name) merged, keeping her name.
    assert listed(site) == {
        "ada@example.com": ("Ada Whitfield", "weekly", "active"),
        "kwame.boateng@example.net": ("Kwame Boateng", "weekly", "active"),
        "pat@example.com": ("O'Brien, Pat", "weekly", "active"),
    }


def test_importing_the_same_file_again_adds_nothing_twice(site: Site) -> None:
    first = site.cli("subscribers", "import", "subscribers.csv")
    assert "6 added, 0 merged" in first.output
    before = exported(site)

    again = site.cli("subscribers", "import", "subscribers.csv")
    assert "0 added, 6 merged" in again.output
    assert exported(site) == before
    assert len(before) == 6


def test_import_reads_a_spreadsheet_export_with_a_byte_order_mark(site: Site) -> None:
    write_csv(site, "excel.csv", "Email,Name\r\nada@example.com,Ada\r\n", encoding="utf-8-sig")
    result = site.cli("subscribers", "import", "excel.csv")
    assert "1 added" in result.output
    assert listed(site) == {"ada@example.com": ("Ada", "weekly", "active")}


def test_import_without_an_email_column_imports_nothing(site: Site) -> None:
    write_csv(site, "wrong.csv", "address,name\nada@example.com,Ada\n")
    result = site.cli("subscribers", "import", "wrong.csv", ok=False)
    assert "wrong.csv: line 1: expected a header row with an 'email' column" in result.output
    assert listed(site, "all") == {}


@pytest.mark.parametrize("how", ["removed", "unsubscribed", "bounced"])
def test_an_import_never_resubscribes_a_suppressed_address(site: Site, how: str) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    if how == "removed":
        site.cli("subscribers", "remove", "zoe.martin@example.org")
    else:  # what the unsubscribe link and the bounce handling do
        with Store(site.config.database_url) as store, store.session() as session:
            readers.suppress(session, "zoe.martin@example.org", how, f"{how} in a test")

    result = site.cli("subscribers", "import", "subscribers.csv")
    assert "1 left suppressed" in result.output
    assert "zoe.martin@example.org" not in listed(site)
    assert listed(site, how)["zoe.martin@example.org"][2] == how

    # Only an explicit add by the editor mails the address again.
    site.cli("subscribers", "add", "zoe.martin@example.org")
    assert "zoe.martin@example.org" in listed(site)


def test_import_honours_a_status_column_and_reports_an_unknown_one(site: Site) -> None:
    write_csv(
        site,
        "statuses.csv",
        "email,name,status\n"
        "ada@example.com,Ada,active\n"
        "kwame@example.net,Kwame,unsubscribed\n"
        "zoe@example.org,Zoë,vip\n",
    )
    result = site.cli("subscribers", "import", "statuses.csv", ok=False)
    assert "line 4: unknown status 'vip'" in result.output
    assert "1 marked unsubscribed, removed or bounced in the file" in result.output
    assert set(listed(site)) == {"ada@example.com"}
    assert set(listed(site, "unsubscribed")) == {"kwame@example.net"}


# --- export ----------------------------------------------------------------------------


def test_an_export_imported_into_another_site_round_trips_suppression_included(
    site: Site, tmp_path: Path
) -> None:
    site.cli("subscribers", "import", "subscribers.csv")
    site.cli("subscribers", "remove", "kwame.boateng@example.net")
    result = site.cli("subscribers", "export", "list.csv")
    assert "Exported 6 subscriber(s) to list.csv." in result.output
    original = list(csv.DictReader((site.root / "list.csv").open(encoding="utf-8")))
    by_email = {row["email"]: row for row in original}
    assert by_email["zoe.martin@example.org"]["name"] == "Zoë Martín"
    assert by_email["kwame.boateng@example.net"]["status"] == "removed"

    other = make_site(tmp_path / "other")
    imported = other.cli("subscribers", "import", str(site.root / "list.csv"))
    assert "6 added" in imported.output
    # The removed reader stays removed on the new site: moving a list mails nobody who left.
    assert "kwame.boateng@example.net" not in listed(other)
    assert exported(other) == original


# --- each reader's rhythm: cadence, send hour, time zone -------------------------------

# The weekly digest goes at each reader's hour (08:00 by default) and offers daily or
# weekly; "premieres" is instant by default and goes when the editor's schedule runs.
RHYTHM_DIGESTS = """\
    first_issue_since: 2026-01-01
    cadences: [daily, weekly]
    send_hour: 8
  - name: premieres
    title: Premieres
    cadence: instant
    cadences: [instant, weekly]
"""


def with_rhythms(site: Site) -> Site:
    text = site.config_path.read_text(encoding="utf-8")
    site.write_config(text.replace("    first_issue_since: 2026-01-01\n", RHYTHM_DIGESTS))
    return site


def rhythm_of(site: Site, address: str) -> str:
    return listed_rhythms(site, "all")[address][3]


def test_add_sets_cadence_hour_and_zone_and_refuses_what_a_digest_does_not_offer(
    site: Site,
) -> None:
    with_rhythms(site)
    added = site.cli(
        "subscribers",
        "add",
        "ada@example.com",
        "--digest",
        "weekly",
        "--cadence",
        "daily",
        "--send-hour",
        "7",
        "--timezone",
        "America/New_York",
    )
    assert "Added ada@example.com (weekly)." in added.output
    assert "rhythm: daily 07:00 America/New_York" in added.output
    assert rhythm_of(site, "ada@example.com") == "daily 07:00 America/New_York"

    # An option left out changes nothing; "default" goes back to the digest's.
    site.cli("subscribers", "add", "ada@example.com", "--digest", "weekly", "--send-hour", "9")
    assert rhythm_of(site, "ada@example.com") == "daily 09:00 America/New_York"
    site.cli("subscribers", "add", "ada@example.com", "--digest", "weekly", "--timezone", "default")
    assert rhythm_of(site, "ada@example.com") == "daily 09:00 Europe/London"

    # Without --digest: every digest, each with its own default where nothing was chosen.
    site.cli("subscribers", "add", "kwame@example.net")
    assert (
        rhythm_of(site, "kwame@example.net")
        == "premieres: instant; weekly: weekly 08:00 Europe/London"
    )

    for options, option, why in [
        (
            ["--cadence", "instant"],
            "--cadence",
            "cadence 'instant' is not offered by digest weekly",
        ),
        (["--send-hour", "24"], "--send-hour", "send hour 24 is not an hour (0 to 23)"),
        (["--timezone", "Mars/Olympus"], "--timezone", "'Mars/Olympus' is not an IANA zone name"),
        (["--send-hour", "7"], "--send-hour", "digest premieres has no send hour"),
    ]:
        refused = site.cli("subscribers", "add", "zoe@example.org", *options, ok=False)
        assert option in refused.output and why in refused.output, refused.output
        assert "Traceback" not in refused.output
    assert "zoe@example.org" not in listed(site, "all")


RHYTHM_CSV = """\
email,name,digests,cadence,send_hour,timezone
ada@example.com,Ada,weekly,daily,07:00,America/New_York
kwame@example.net,Kwame,weekly,hourly,,
zoe@example.org,Zoë,weekly,,25,
pat@example.com,Pat,weekly,,,Mars/Olympus
lena@example.net,Lena,premieres,,8,
hiro@example.org,Hiro,weekly;premieres,Weekly,,Asia/Tokyo
nerd@example.com,,,,,
"""


def test_import_reads_cadence_hour_and_zone_and_reports_bad_values_by_line_and_column(
    site: Site,
) -> None:
    with_rhythms(site)
    write_csv(site, "rhythms.csv", RHYTHM_CSV)
    result = site.cli("subscribers", "import", "rhythms.csv", ok=False)  # exit 1: rows skipped
    errors = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert errors == [
        "  skipped rhythms.csv: line 3: column cadence: cadence 'hourly' is not offered by "
        "digest weekly (choose daily, weekly)",
        "  skipped rhythms.csv: line 4: column send_hour: send hour 25 is not an hour (0 to 23)",
        "  skipped rhythms.csv: line 5: column timezone: time zone 'Mars/Olympus' is not an "
        "IANA zone name (e.g. Europe/Paris, America/New_York)",
        "  skipped rhythms.csv: line 6: column send_hour: digest premieres has no send hour: "
        "each issue goes when the editor's schedule runs (leave the hour empty, or set "
        "send_hour for the digest)",
    ]
    assert "3 added, 0 merged" in result.stdout and "4 row(s) skipped" in result.stdout
    assert {email: row[3] for email, row in listed_rhythms(site).items()} == {
        "ada@example.com": "daily 07:00 America/New_York",
        "hiro@example.org": "premieres: weekly; weekly: weekly 08:00 Asia/Tokyo",
        "nerd@example.com": "premieres: instant; weekly: weekly 08:00 Europe/London",
    }

    # A subscription already on the list keeps what its reader chose; a new one takes the row's.
    write_csv(site, "again.csv", "email,digests,cadence\nada@example.com,weekly;premieres,weekly\n")
    site.cli("subscribers", "import", "again.csv")
    assert rhythm_of(site, "ada@example.com") == (
        "premieres: weekly; weekly: daily 07:00 America/New_York"
    )


def test_an_export_round_trips_each_subscriptions_rhythm(site: Site, tmp_path: Path) -> None:
    with_rhythms(site)
    site.cli(
        "subscribers",
        "add",
        "ada@example.com",
        "--name",
        "Ada",
        "--digest",
        "weekly",
        "--cadence",
        "daily",
        "--send-hour",
        "7",
        "--timezone",
        "America/New_York",
    )
    site.cli(
        "subscribers", "add", "ada@example.com", "--digest", "premieres", "--cadence", "weekly"
    )
    site.cli("subscribers", "add", "kwame@example.net", "--timezone", "Africa/Accra")
    site.cli("subscribers", "add", "nerd@example.com")
    site.cli("subscribers", "export", "list.csv")
    original = list(csv.DictReader((site.root / "list.csv").open(encoding="utf-8")))
    assert [
        (r["email"], r["digests"], r["cadence"], r["send_hour"], r["timezone"]) for r in original
    ] == [
        # Ada's two digests have different rhythms: one row each.
        ("ada@example.com", "premieres", "weekly", "", ""),
        ("ada@example.com", "weekly", "daily", "7", "America/New_York"),
        ("kwame@example.net", "premieres;weekly", "", "", "Africa/Accra"),
        ("nerd@example.com", "premieres;weekly", "", "", ""),
    ]
    before = listed_rhythms(site)

    other = with_rhythms(make_site(tmp_path / "other"))
    imported = other.cli("subscribers", "import", str(site.root / "list.csv"))
    assert "3 added, 1 merged" in imported.output
    assert exported(other) == original
    assert listed_rhythms(other) == before


# --- tokens ----------------------------------------------------------------------------


def test_a_token_reads_back_to_the_subscriber_it_was_made_for() -> None:
    ada, kwame = make_token(SECRET, "unsubscribe", 1), make_token(SECRET, "unsubscribe", 2)
    assert ada != kwame
    assert read_token(SECRET, "unsubscribe", ada) == 1
    assert read_token(SECRET, "unsubscribe", kwame) == 2


def test_a_token_for_one_purpose_is_refused_for_another() -> None:
    token = make_token(SECRET, "preferences", 7)
    with pytest.raises(InvalidToken, match="this unsubscribe link is not valid"):
        read_token(SECRET, "unsubscribe", token)
    with pytest.raises(InvalidToken):
        read_token(SECRET, "confirm", token)


def test_a_token_signed_with_another_secret_or_altered_is_refused() -> None:
    token = make_token(SECRET, "unsubscribe", 7)
    with pytest.raises(InvalidToken):
        read_token("another-secret", "unsubscribe", token)
    payload, _, signature = token.partition(".")
    forged = make_token(SECRET, "unsubscribe", 8).partition(".")[0] + "." + signature
    for bad in (forged, token[:-1], token + "x", "", "not a token"):
        with pytest.raises(InvalidToken):
            read_token(SECRET, "unsubscribe", bad)
    assert read_token(SECRET, "unsubscribe", f"{payload}.{signature}") == 7


def test_a_validly_signed_token_that_is_not_a_subscriber_id_is_refused() -> None:
    token = URLSafeSerializer(SECRET, salt="syndicate.unsubscribe").dumps("ada@example.com")
    with pytest.raises(InvalidToken):
        read_token(SECRET, "unsubscribe", token)
