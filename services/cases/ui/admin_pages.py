"""The organization's people, for administrators and partners' managers: the users (invite one
with a one-time sign-in link, make a new link, deactivate, activate) and, for administrators,
the partners. Forms are loaded with the API's own schemas, so a page accepts exactly what
``/api/v1`` would."""

from __future__ import annotations

from flask import Blueprint, Flask, abort, flash, g, redirect, request, url_for
from marshmallow import ValidationError

from services.cases.domain import ADMINISTRATOR, MANAGER, ROLES
from services.cases.handlers import labels, org, people, sign_in
from services.cases.schemas import LabelSchema, OrgSettingsSchema, PartnerSchema, UserSchema
from services.cases.ui.pages import _, do, page, protect, store
from shared.text import loads_json

bp = Blueprint("ui_admin", __name__, url_prefix="/org")
protect(bp)  # signed-in users only, CSRF, private headers: as every page


def register(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.before_request
def _managers_only():
    if g.get("signed_in") and g.signed_in.actor.role not in (ADMINISTRATOR, MANAGER):
        abort(404)  # agents have no organization pages


def _role_names() -> dict[str, str]:
    return {"administrator": _("Administrator"), "manager": _("Manager"), "agent": _("Agent")}


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
        roles=[(role, _role_names()[role]) for role in roles],
        role_names=_role_names(),
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


# --- labels -------------------------------------------------------------------------------------
def _admins_only() -> None:
    if not g.signed_in.actor.is_admin:
        abort(404)


@bp.route("/labels", methods=["GET", "POST"])
def label_list():
    _admins_only()
    actor = g.signed_in.actor
    error = None
    if request.method == "POST":
        rule = _rule_from_form()
        try:
            values = LabelSchema().load(
                {
                    "name": request.form.get("name", "").strip(),
                    "description": request.form.get("description", "").strip(),
                    "rule": rule,
                }
            )
        except ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, dict) else {}
            if "rule" in messages:
                error = _("The rule is not valid: %(why)s", why=_first(messages["rule"]))
            else:
                error = _("Give the label a name.")
        else:
            if do(lambda: labels.create_label(store(), actor, values)) is not None:
                flash(_("Saved."), "done")
                return redirect(url_for("ui_admin.label_list"))
    catalog = org.org_catalog(store(), actor)
    return page(
        "org_labels.html",
        400 if error else 200,
        labels=labels.list_labels(store(), actor),
        groups=catalog.groups,
        flows=catalog.flows,
        error=error,
    )


def _rule_from_form() -> list[dict]:
    """The rule's tests from the form's simple fields (each one given is a test: all must pass),
    or the advanced JSON as it is written."""
    advanced = request.form.get("advanced", "").strip()
    if advanced:
        try:
            return loads_json(advanced)
        except ValueError:
            return [{"type": "not JSON"}]
    rule: list[dict] = []
    if group := request.form.get("group"):
        rule.append({"type": "groups", "quantifier": "any", "groups": [group[:64]]})
    flow, node = request.form.get("flow"), request.form.get("node", "").strip()
    if flow and node:
        rule.append({"type": "step", "steps": [{"flow": flow[:64], "node": node[:64]}]})
    keywords = [k.strip() for k in request.form.get("keywords", "").split(",") if k.strip()]
    if keywords:
        rule.append({"type": "keywords", "quantifier": "any", "keywords": keywords[:50]})
    return rule


def _first(messages) -> str:
    while isinstance(messages, list | dict):
        messages = next(iter(messages.values() if isinstance(messages, dict) else messages), "")
    return str(messages)


# --- properties ---------------------------------------------------------------------------------
@bp.route("/properties", methods=["GET", "POST"])
def properties():
    _admins_only()
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
