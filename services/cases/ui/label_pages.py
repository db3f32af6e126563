"""The organization's labels, for administrators: the list (each rule in words, in the page's
language), a new label, a label's page (change it, deactivate or activate it, delete it after
asking again), and a preview of which recent messages a rule would match. Forms are loaded with
the API's own schemas and saved by the same service-layer functions as ``/api/v1/labels``."""

from __future__ import annotations

import json
from typing import Any

from flask import flash, g, redirect, request, url_for
from marshmallow import ValidationError

from services.cases.handlers import labels, org
from services.cases.schemas import LabelChangesSchema, LabelSchema
from services.cases.ui import i18n, rule_words
from services.cases.ui.org_blueprint import admins_only, attempt, bp, first_problem
from services.cases.ui.pages import _, do, page, store
from shared.text import loads_json

PREVIEW_EXAMINED = 500  # the newest received messages a preview evaluates
PREVIEW_SHOWN = 20
FIELDS = ("name", "description", "group", "flow", "node", "keywords", "advanced")


def _taken() -> dict[str, str]:
    return {"LABEL_NAME_TAKEN": _("Another label already has that name.")}


@bp.route("/labels", methods=["GET", "POST"])
def label_list():
    admins_only()
    actor = g.signed_in.actor
    error, preview, form = None, None, dict.fromkeys(FIELDS, "")
    if request.method == "POST":
        form = _form_from_request()
        if request.form.get("action") == "preview":
            preview, error = _preview(form)
            return _labels_page("org_labels.html", error, form, preview)
        values, error = _load(LabelSchema(), form)
        if values is not None:
            created, error = attempt(lambda: labels.create_label(store(), actor, values), _taken())
            if created is not None:
                flash(_("Saved."), "done")
                return redirect(url_for("ui_admin.label_list"))
    return _labels_page("org_labels.html", error, form, preview)


@bp.route("/labels/<label_id>", methods=["GET", "POST"])
def label_page(label_id: str):
    admins_only()
    actor, label_id = g.signed_in.actor, label_id[:64]
    label = labels.get_label(store(), actor, label_id)  # NotFound: the Not found page
    error, preview, form = None, None, _form_from_rule(label)
    if request.method == "POST":
        form = _form_from_request()
        if request.form.get("action") == "preview":
            preview, error = _preview(form)
            return _labels_page("org_label.html", error, form, preview, label=label)
        values, error = _load(LabelChangesSchema(), form)
        if values is not None:
            saved, error = attempt(
                lambda: labels.update_label(store(), actor, label_id, values), _taken()
            )
            if saved is not None:
                flash(_("Saved."), "done")
                return redirect(url_for("ui_admin.label_page", label_id=label_id))
    return _labels_page("org_label.html", error, form, preview, label=label)


@bp.post("/labels/<label_id>/<command>")
def label_command(label_id: str, command: str):
    admins_only()
    actor, label_id = g.signed_in.actor, label_id[:64]
    if command in ("activate", "deactivate"):
        change = {"active": command == "activate"}
        if do(lambda: labels.update_label(store(), actor, label_id, change)) is not None:
            flash(_("Saved."), "done")
    elif command == "delete":
        if request.form.get("confirm") != "yes":
            flash(_("Tick the box to confirm that the label is to be deleted."), "error")
            return redirect(url_for("ui_admin.label_page", label_id=label_id))
        labels.delete_label(store(), actor, label_id)  # NotFound: the Not found page
        flash(_("The label is deleted."), "done")
        return redirect(url_for("ui_admin.label_list"))
    else:
        return page("error.html", 404, title=_("Not found"), reason="missing")
    return redirect(url_for("ui_admin.label_page", label_id=label_id))


def _labels_page(template: str, error: str | None, form: dict, preview, **values: Any):
    actor = g.signed_in.actor
    catalog = org.org_catalog(store(), actor)
    groups = {group["uuid"]: group["name"] for group in catalog.groups}
    flows = {flow["uuid"]: flow["name"] for flow in catalog.flows}
    timezone = org.get_org(store(), actor).timezone
    return page(
        template,
        400 if error else 200,
        labels=labels.list_labels(store(), actor) if template == "org_labels.html" else [],
        groups=catalog.groups,
        flows=catalog.flows,
        rule_in_words=lambda rule: rule_words.describe(rule, groups, flows),
        form=form,
        error=error,
        preview=preview,
        when=lambda moment: i18n.when(moment, g.language, timezone),
        **values,
    )


def _preview(form: dict[str, str]):
    """The preview of the form's rule (no name needed: nothing is saved), or the rule's error."""
    try:
        rule = LabelChangesSchema().load({"rule": _rule_of(form)})["rule"]
    except ValidationError as exc:
        why = first_problem(exc.messages)
        return None, _("The rule is not valid: %(why)s", why=why)
    preview = labels.preview_rule(
        store(), g.signed_in.actor, rule, examine=PREVIEW_EXAMINED, show=PREVIEW_SHOWN
    )
    return preview, None


def _load(schema, form: dict[str, str]) -> tuple[dict | None, str | None]:
    """The form's values loaded as the API loads its body, or the error to show."""
    try:
        return schema.load(
            {"name": form["name"], "description": form["description"], "rule": _rule_of(form)}
        ), None
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {}
        if "rule" in messages:
            return None, _("The rule is not valid: %(why)s", why=first_problem(messages["rule"]))
        return None, _("Give the label a name.")


def _form_from_request() -> dict[str, str]:
    return {key: request.form.get(key, "").strip() for key in FIELDS}


def _rule_of(form: dict[str, str]) -> list[dict]:
    """The rule's tests from the form's simple fields (each one given is a test: all must pass),
    or the advanced JSON as it is written."""
    if advanced := form["advanced"]:
        try:
            return loads_json(advanced)
        except ValueError:
            return [{"type": "not JSON"}]
    rule: list[dict] = []
    if group := form["group"]:
        rule.append({"type": "groups", "quantifier": "any", "groups": [group[:64]]})
    if form["flow"] and form["node"]:
        rule.append(
            {"type": "step", "steps": [{"flow": form["flow"][:64], "node": form["node"][:64]}]}
        )
    keywords = [k.strip() for k in form["keywords"].split(",") if k.strip()]
    if keywords:
        rule.append({"type": "keywords", "quantifier": "any", "keywords": keywords[:50]})
    return rule


def _form_from_rule(label) -> dict[str, str]:
    """A label's values as the form shows them: its rule in the simple fields when they can say
    it (one group, one step, "any" keywords, each at most once), else as advanced JSON."""
    form = dict.fromkeys(FIELDS, "")
    form.update(name=label.name, description=label.description)
    simple: dict[str, str] = {}
    for test in label.rule:
        kind = test["type"]
        if kind == "groups" and test["quantifier"] == "any" and len(test["groups"]) == 1:
            key, value = "group", test["groups"][0]
        elif kind == "step" and len(test["steps"]) == 1:
            key, value = "flow", test["steps"][0]["flow"]
            simple["node"] = test["steps"][0]["node"]
        elif kind == "keywords" and test["quantifier"] == "any":
            key, value = "keywords", ", ".join(test["keywords"])
        else:
            key, value = "", ""
        if not key or key in simple:
            form["advanced"] = json.dumps(label.rule, ensure_ascii=False, indent=2)
            return form
        simple[key] = value
    form.update(simple)
    return form
