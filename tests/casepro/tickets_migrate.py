"""The two files CasePro's ``manage.py tickets_migrate <org id>`` writes, made from a CasePro
test database with SQL of their own (not through the reader under test), in CasePro's format:

- ``<Org name, spaces as _>_cases.json``: one JSON array written by json.dumps (no indentation,
  non-ASCII as \\u escapes), every case of the org by id, times as UTC isoformat(), labels'
  names sorted (deleted labels included);
- ``<Org>_agents.csv``: the csv module's excel dialect (CRLF), header Email,Name,Partner, one row
  per user of each active partner by name (the profile's full name, else first and last name).
"""

from __future__ import annotations

import csv
import json
from datetime import UTC
from pathlib import Path

import psycopg

CASES_SQL = """
SELECT c.id, c.opened_on, c.closed_on, c.summary, ct.uuid, p.name, u.email,
    ARRAY(SELECT l.name FROM cases_case_labels cl JOIN msgs_label l ON l.id = cl.label_id
          WHERE cl.case_id = c.id ORDER BY l.name)
FROM cases_case c
JOIN contacts_contact ct ON ct.id = c.contact_id
JOIN cases_partner p ON p.id = c.assignee_id
LEFT JOIN auth_user u ON u.id = c.user_assignee_id
WHERE c.org_id = %s ORDER BY c.id"""

AGENTS_SQL = """
SELECT u.email, COALESCE(pr.full_name, u.first_name || ' ' || u.last_name), p.name
FROM cases_partner p
JOIN cases_partner_users pu ON pu.partner_id = p.id
JOIN auth_user u ON u.id = pu.user_id
LEFT JOIN profiles_profile pr ON pr.user_id = u.id
WHERE p.org_id = %s AND p.is_active ORDER BY p.name, u.id"""


def write_migrate_files(url: str, org_id: int, folder: Path) -> tuple[Path, Path]:
    """Write the org's two files into ``folder``; their paths (cases, agents)."""
    with psycopg.connect(url) as conn:
        (name,) = conn.execute("SELECT name FROM orgs_org WHERE id = %s", (org_id,)).fetchone()
        base = name.replace(" ", "_")
        cases = []
        for case_id, opened, closed, summary, contact, partner, email, labels in conn.execute(
            CASES_SQL, (org_id,)
        ):
            cases.append(
                {
                    "id": case_id,
                    "opened_on": opened.astimezone(UTC).isoformat(),
                    "closed_on": closed.astimezone(UTC).isoformat() if closed else None,
                    "summary": summary,
                    "contact": contact,
                    "assignee": {"partner": partner, "user": email},
                    "labels": labels,
                }
            )
        agents = conn.execute(AGENTS_SQL, (org_id,)).fetchall()
    cases_path = folder / f"{base}_cases.json"
    cases_path.write_text(json.dumps(cases), encoding="utf-8")
    agents_path = folder / f"{base}_agents.csv"
    with agents_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["Email", "Name", "Partner"])
        writer.writerows(agents)
    return cases_path, agents_path
