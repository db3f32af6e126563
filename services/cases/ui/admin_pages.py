"""The organization's people, for administrators and partners' managers: the users (invite one
with a one-time sign-in link, make a new link, deactivate, activate, change a role or partner)
and, for administrators, the partners (add, change) and the org's properties; the labels are in
``label_pages.py`` and the ready-made answers in ``answer_pages.py``, on the same blueprint
(``org_blueprint.py``). Forms are loaded with the API's own schemas, so a page accepts exactly
what ``/api/v1`` would."""

from __future__ import annotations

from flask import Flask, abort, flash, g, redirect, request, url_for
from marshmallow import ValidationError

from services.cases.domain import ADMINISTRATOR, ROLES
from services.cases.handlers import labels, org, people, sign_in
from services.cases.schemas import (
    OrgSettingsSchema,
    PartnerChangesSchema,
    PartnerSchema,
    UserChangesSchema,
    UserSchema,
)
from services.cases.ui import (
    answer_pages,  # noqa: F401 (adds the answers' routes to bp)
    label_pages,  # noqa: F401 (adds the labels' routes to bp)
)
from services.cases.ui.org_blueprint import admins_only, attempt, bp, role_names
from services.cases.ui.pages import _, do, page, store


def register(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.route("/users", methods=["GET", "POST"])
def users():
    actor = g.signed_in.actor
    error, link = None, None
    if request.method == "POST":
        try:
            values = UserSchema().load(
                {
                    "name": request.form.get("name", "").strip(),
                    "email": request.form.get("email", "").strip(),
                    "role": request.form.get("role", ""),
                    "partner": request.form.get("partner") or None,
                }
            )
        except ValidationError:
            error = _("Give a name, a valid email and a role.")
        else:
            user = do(lambda: people.create_user(store(), actor, values))
            if user is not None:
                link = _link_for(user.id, user.name)
    return _users_page(error, link)


@bp.post("/users/<user_id>/<command>")
def user_command(user_id: str, command: str):
    actor, user_id = g.signed_in.actor, user_id[:64]
    if command == "link":
        user = people.get_user(store(), actor, user_id)
        return _users_page(None, _link_for(user.id, user.name))
    elif command in ("deactivate", "activate"):
        change = {"active": command == "activate"}
        if do(lambda: people.update_user(store(), actor, user_id, change)) is not None:
            flash(_("Saved."), "done")
    elif command == "change":
        try:
            change = UserChangesSchema().load(
                {
                    "role": request.form.get("role", ""),
                    "partner": request.form.get("partner") or None,
                }
            )
        except ValidationError:
            flash(_("Choose a role and a partner from the lists."), "error")
        else:
            saved, problem = attempt(
                lambda: people.update_user(store(), actor, user_id, change),
                {
                    "CANNOT_CHANGE_SELF": _("You cannot change your own role or partner."),
                    "INVALID": _(
                        "Administrators belong to no partner; managers and agents to one."
                    ),
                },
            )
            if problem:
                flash(problem, "error")
            elif saved is not None:
                flash(_("Saved."), "done")
    else:
        abort(404)
    return redirect(url_for("ui_admin.users"))


def _link_for(user_id: str, name: str) -> dict[str, str] | None:
    link = do(lambda: sign_in.make_link(store(), g.signed_in.actor, user_id))
    if link is None:
        return None
    return {"name": name, "url": request.host_url.rstrip("/") + f"/set-password/{link.token}"}


def _users_page(error: str | None, link: dict[str, str] | None):
    actor = g.signed_in.actor
    roles = ROLES if actor.role == ADMINISTRATOR else ("manager", "agent")
    return page(
        "org_users.html",
        400 if error else 200,
        users=people.list_users(store(), actor),
        partners=[
            p
            for p in people.list_partners(store(), actor)
            if actor.role == ADMINISTRATOR or p.id == actor.partner_id
        ],
        roles=[(role, role_names()[role]) for role in roles],
        role_names=role_names(),
        error=error,
        link=link,
    )


@bp.route("/partners", methods=["GET", "POST"])
def partners():
    actor = g.signed_in.actor
    if actor.role != ADMINISTRATOR:
        abort(404)
    error = None
    if request.method == "POST":
        try:
            values = PartnerSchema().load(
                {
                    "name": request.form.get("name", "").strip(),
                    "description": request.form.get("description", "").strip(),
                    "restricted": request.form.get("restricted") == "on",
                    "labels": request.form.getlist("labels"),
                }
            )
        except ValidationError:
            error = _("Give the partner a name.")
        else:
            if do(lambda: people.create_partner(store(), actor, values)) is not None:
                flash(_("Saved."), "done")
                return redirect(url_for("ui_admin.partners"))
    return page(
        "org_partners.html",
        400 if error else 200,
        partners=people.list_partners(store(), actor),
        labels=labels.list_labels(store(), actor),
        error=error,
    )


@bp.route("/partners/<partner_id>", methods=["GET", "POST"])
def partner_page(partner_id: str):
    admins_only()
    actor, partner_id = g.signed_in.actor, partner_id[:64]
    partner = people.get_partner(store(), actor, partner_id)  # NotFound: the Not found page
    error = None
    form = {
        "name": partner.name,
        "description": partner.description,
        "restricted": partner.restricted,
        "labels": {label.id for label in partner.labels},
    }
    if request.method == "POST":
        form = {
            "name": request.form.get("name", "").strip(),
            "description": request.form.get("description", "").strip(),
            "restricted": request.form.get("restricted") == "on",
            "labels": set(request.form.getlist("labels")),
        }
        try:
            values = PartnerChangesSchema().load({**form, "labels": sorted(form["labels"])})
        except ValidationError:
            error = _("Give the partner a name.")
        else:
            taken = {"PARTNER_NAME_TAKEN": _("Another partner already has that name.")}
            saved, error = attempt(
                lambda: people.update_partner(store(), actor, partner_id, values), taken
            )
            if saved is not None:
                flash(_("Saved."), "done")
                return redirect(url_for("ui_admin.partner_page", partner_id=partner_id))
    return page(
        "org_partner.html",
        400 if error else 200,
        partner=partner,
        form=form,
        labels=labels.list_labels(store(), actor),
        error=error,
    )


# --- properties ---------------------------------------------------------------------------------
@bp.route("/properties", methods=["GET", "POST"])
def properties():
    admins_only()
    actor = g.signed_in.actor
    error = None
    if request.method == "POST":
        try:
            values = OrgSettingsSchema().load(
                {
                    "suspend_groups": request.form.getlist("suspend_groups"),
                    "followup_flow": request.form.get("followup_flow") or None,
                    "display_field": request.form.get("display_field", "").strip() or None,
                    "timezone": request.form.get("timezone", "").strip(),
                    "warning_days": request.form.get("warning_days") or None,
                    "must_use_answers": request.form.get("must_use_answers") == "on",
                }
            )
        except ValidationError as exc:
            fields = sorted(exc.messages) if isinstance(exc.messages, dict) else []
            error = _("Check these fields: %(fields)s", fields=", ".join(fields))
        else:
            if do(lambda: org.update_org(store(), actor, values)) is not None:
                flash(_("Saved."), "done")
                return redirect(url_for("ui_admin.properties"))
    settings = org.get_org(store(), actor)
    catalog = org.org_catalog(store(), actor)
    return page(
        "org_properties.html",
        400 if error else 200,
        settings=settings,
        chosen_groups={g.uuid for g in settings.suspend_groups},
        groups=catalog.groups,
        flows=catalog.flows,
        webhook=request.host_url.rstrip("/") + f"/webhooks/{actor.org}/flow",
        error=error,
    )
