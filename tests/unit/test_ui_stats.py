"""The statistics pages: the org's summary with its charts and tables, a partner's page with its
replies' delays, a label's and a user's, agent activity sorted; who sees which (test client)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import openpyxl

from shared import events as ev
from shared.bus.dispatch import Outcome
from tests.unit.test_stats import helpline
from tests.unit.test_ui_sign_in import browser, csrf, set_password


def signed_in(world, person):
    client = browser(world)
    set_password(world, client, person)
    return client


def story(world):
    h = helpline(world)
    for text in ("um", "dois", "três"):
        message = world.message([h["label"]], text=text, received_at=datetime.now(UTC))
    case = world.open_case(world.admin, message, h["partner"])
    world.ok(world.post(h["agent"], f"/api/v1/cases/{case['id']}/reply", {"text": "Oi"}), 201)
    late = world.message([h["label"]], received_at=datetime.now(UTC) - timedelta(days=2))
    world.ok(world.post(h["agent"], f"/api/v1/messages/{late}/reply", {"text": "Desculpe"}), 201)
    return h


def test_the_org_summary(world):
    story(world)
    page = signed_in(world, world.admin).get("/stats").get_data(as_text=True)
    assert "Incoming messages per day" in page and "Replies per month" in page
    assert page.count("<svg") == 4  # incoming per day, replies, opened and closed per month
    # The numbers as a table too: today's 4 incoming messages (the late one counts 2 days ago).
    assert re.search(r"<th scope=\"row\">[^<]+</th><td>3</td>", page)
    totals = dict(re.findall(r"<dt>([^<]+)</dt>\s*<dd>([^<]+)</dd>", page))
    assert totals["Incoming messages"] == "4" and totals["Replies"] == "2"
    assert totals["Cases opened"] == "1"
    assert 'href="/stats/labels/' in page  # the top labels lead to their pages


def test_a_partners_page_marks_late_replies(world):
    h = story(world)
    client = signed_in(world, h["agent"])
    assert client.get("/stats").headers["Location"] == f"/stats/partners/{h['partner']}"
    page = client.get(f"/stats/partners/{h['partner']}").get_data(as_text=True)
    assert "Helpline" in page and "Replies per month" in page
    assert page.count('class="slow"') == 1 and "over 24 hours" in page
    assert "2 days" in page  # the late reply's delay, in words
    assert f'href="/stats/users/{h["agent"].id}"' in page  # its users
    assert client.get(f"/stats/partners/{h['other']}").status_code == 404
    assert client.get("/stats/activity").status_code == 404  # agents do not read others'


def test_label_and_user_pages(world):
    h = story(world)
    client = signed_in(world, world.admin)
    label = client.get(f"/stats/labels/{h['label']}").get_data(as_text=True)
    assert "Incoming messages per day" in label and "violence" in label
    user = client.get(f"/stats/users/{h['agent'].id}").get_data(as_text=True)
    assert "Ana" in user and "Replies per month" in user
    assert client.get("/stats/labels/nope").status_code == 404


def test_agent_activity_sorted(world):
    h = story(world)
    world.user(h["partner"], name="Zé")
    client = signed_in(world, world.admin)
    page = client.get("/stats/activity?sort=replies&order=desc").get_data(as_text=True)
    names = re.findall(r'<th scope="row"><a href="/stats/users/[^"]+">([^<]+)</a>', page)
    assert names[0] == "Ana"  # the most replies first
    assert 'aria-sort="descending"' in page
    by_name = client.get("/stats/activity?sort=name").get_data(as_text=True)
    names = re.findall(r'<th scope="row"><a href="/stats/users/[^"]+">([^<]+)</a>', by_name)
    assert names == sorted(names, key=str.lower)
    odd = client.get("/stats/activity?from=2020-01-01&to=2026-12-01")  # too long a range
    assert odd.status_code == 302


def test_agent_activity_a_page_of_users_at_a_time(world, monkeypatch):
    monkeypatch.setattr("services.cases.ui.stats_pages.ACTIVITY_PAGE", 2)
    h = story(world)
    for name in ("Bia", "Caio", "Zé"):
        world.user(h["partner"], name=name)
    client = signed_in(world, world.admin)
    row = re.compile(r'<th scope="row"><a href="/stats/users/[^"]+">([^<]+)</a>')
    seen, url = [], "/stats/activity?sort=name"
    while url:
        page = client.get(url).get_data(as_text=True)
        names = row.findall(page)
        assert 1 <= len(names) <= 2
        seen += names
        following = re.search(r'<a rel="next" href="([^"]+)"', page)
        url = following.group(1).replace("&amp;", "&") if following else None
    assert seen == sorted(seen, key=str.lower) and len(seen) == len(set(seen)) >= 5
    assert f"of {len(seen)}" in page and 'rel="prev"' in page
    beyond = client.get("/stats/activity?sort=name&page=99").get_data(as_text=True)
    assert row.findall(beyond) == seen[-len(row.findall(beyond)) :]  # the last page


def test_charts_run_right_to_left_in_arabic(world):
    story(world)
    client = signed_in(world, world.admin)
    english = client.get("/stats").get_data(as_text=True)
    arabic = client.get("/stats", headers={"Accept-Language": "ar"}).get_data(as_text=True)
    first_bar = re.compile(r'<rect x="([\d.]+)"')
    # The oldest day is the first bar drawn: on the left in English, on the right in Arabic.
    assert float(first_bar.search(english).group(1)) < 10
    assert float(first_bar.search(arabic).group(1)) > 590
    assert 'dir="rtl"' in arabic


def test_a_partners_replies_exported_from_its_page(world):
    h = story(world)
    other_message = world.message([h["label"]], text="para a escola")
    world.ok(
        world.post(h["teacher"], f"/api/v1/messages/{other_message}/reply", {"text": "x"}), 201
    )
    client = signed_in(world, world.admin)
    token = csrf(client, f"/stats/partners/{h['partner']}")
    form = {"csrf_token": token, "kind": "replies", "partner": h["partner"], "format": "xlsx"}
    assert client.post("/exports", data=form).status_code == 302
    [requested] = world.events(ev.EXPORT_REQUESTED)
    assert world.deliver(requested) is Outcome.ACK
    download = client.get(f"/exports/{requested.data['export_id']}/file")
    sheet = openpyxl.load_workbook(io.BytesIO(download.data), read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    download.close()
    partner_column = rows[0].index("partner")
    assert [row[partner_column] for row in rows[1:]] == ["Helpline", "Helpline"]  # not the school's


def test_the_daily_counts_and_the_activity_exported(world):
    h = story(world)
    client = signed_in(world, world.admin)
    summary = client.get("/stats").get_data(as_text=True)
    assert 'name="kind" value="daily"' in summary
    token = csrf(client, "/stats")
    today = datetime.now(UTC).date().isoformat()
    daily = {"csrf_token": token, "kind": "daily", "scope": "org", "to": today, "format": "csv"}
    assert client.post("/exports", data=daily).status_code == 302
    activity = {"csrf_token": token, "kind": "activity", "format": "csv", "to": today}
    assert client.post("/exports", data=activity).status_code == 302
    files = {}
    for event in world.events(ev.EXPORT_REQUESTED):
        assert world.deliver(event) is Outcome.ACK
        download = client.get(f"/exports/{event.data['export_id']}/file")
        files[event.data["kind"]] = list(csv.reader(io.StringIO(download.data.decode("utf-8-sig"))))
        download.close()
    counts = {(row[1]): int(row[2]) for row in files["daily"][1:] if row[0] == today}
    assert counts["incoming"] == 3 and counts["replies"] == 2 and counts["opened"] == 1
    by_user = {row[0]: row for row in files["activity"][1:]}
    assert by_user["Ana"][2] == "2"  # her two replies
    # An agent may not export the org's counts nor anyone's activity.
    agent = signed_in(world, h["agent"])
    token = csrf(agent, "/inbox")
    for form in (daily, activity):
        agent.post("/exports", data=form | {"csrf_token": token})
    assert len(world.events(ev.EXPORT_REQUESTED)) == 2  # nothing more was asked
