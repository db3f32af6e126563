"""Marshmallow schemas of the partner API's request bodies and query strings.

Schemas are strict: an unknown key is an error naming it, so a typo never passes silently.
Every string refuses NUL characters and unpaired surrogates (PostgreSQL stores neither), so bad
input is a 400 naming the field, never a 500. The OpenAPI document is built from these classes.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from services.cases import answers_domain as answers
from services.cases.domain import FOLDERS, MESSAGE_ACTIONS, ROLES
from shared.rules import RuleError, parse_rule
from shared.text import find_bad_strings, has_forbidden_chars

MAX_PAGE = 200


class Text(fields.String):
    """A stripped string that PostgreSQL can store; blank counts as missing when required."""

    default_error_messages = {
        "bad_chars": "Must not contain NUL characters or unpaired surrogates.",
        "blank": "Must not be blank.",
    }

    def __init__(self, *, blank: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.blank = blank

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if has_forbidden_chars(text):
            raise self.make_error("bad_chars")
        text = text.strip()
        if not text and not self.blank:
            raise self.make_error("blank")
        return text


def Id(**kwargs: Any) -> Text:  # noqa: N802 (a field factory, read like a field class)
    return Text(validate=validate.Length(max=64), **kwargs)


class Timezone(Text):
    default_error_messages = {"zone": "Not a known time zone (e.g. America/Sao_Paulo)."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        name = super()._deserialize(value, attr, data, **kwargs)
        try:
            zoneinfo.ZoneInfo(name)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError, OSError) as exc:
            raise self.make_error("zone") from exc
        return name


class Rule(fields.List):
    """A label rule as the labeler stores it; validated with the labeler's own parser."""

    default_error_messages = {"bad_chars": Text.default_error_messages["bad_chars"]}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.Dict(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list:
        rule = super()._deserialize(value, attr, data, **kwargs)
        if find_bad_strings(rule):
            raise self.make_error("bad_chars")
        try:
            parse_rule(rule)
        except RuleError as exc:
            raise ValidationError(str(exc)) from exc
        return rule


def When(**kwargs: Any) -> fields.AwareDateTime:  # noqa: N802
    # A time without a zone is read as UTC rather than refused.
    return fields.AwareDateTime(default_timezone=UTC, **kwargs)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class _Page(_Strict):
    cursor = Text(validate=validate.Length(max=500))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE))


# --- org ----------------------------------------------------------------------------------------
class OrgSettingsSchema(_Strict):
    """PATCH /org: any subset of the settings."""

    name = Text(validate=validate.Length(max=128))
    timezone = Timezone()
    suspend_groups = fields.List(Id(), validate=validate.Length(max=50))
    followup_flow = Id(allow_none=True)
    followup_every_close = fields.Boolean()
    interrupt_on_open = fields.Boolean()
    mirror_labels = fields.Boolean()
    mirror_archive = fields.Boolean()
    display_field = Text(allow_none=True, validate=validate.Length(max=64))
    warning_days = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=3650))
    must_use_answers = fields.Boolean()


# --- partners, users, tokens --------------------------------------------------------------------
class PartnerSchema(_Strict):
    name = Text(required=True, validate=validate.Length(max=128))
    description = Text(blank=True, load_default="", validate=validate.Length(max=2000))
    restricted = fields.Boolean(load_default=False)
    labels = fields.List(Id(), load_default=list, validate=validate.Length(max=500))


class PartnerChangesSchema(_Strict):
    name = Text(validate=validate.Length(max=128))
    description = Text(blank=True, validate=validate.Length(max=2000))
    restricted = fields.Boolean()
    labels = fields.List(Id(), validate=validate.Length(max=500))


class UserSchema(_Strict):
    name = Text(required=True, validate=validate.Length(max=128))
    email = fields.Email(required=True, validate=validate.Length(max=254))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    partner = Id(allow_none=True, load_default=None)


class UserChangesSchema(_Strict):
    name = Text(validate=validate.Length(max=128))
    role = fields.String(validate=validate.OneOf(ROLES))
    partner = Id(allow_none=True)  # None: no partner (administrators only)
    active = fields.Boolean()


class UserQuery(_Strict):
    partner = Id()


class TokenSchema(_Strict):
    description = Text(blank=True, load_default="", validate=validate.Length(max=128))


# --- labels -------------------------------------------------------------------------------------
class LabelSchema(_Strict):
    name = Text(required=True, validate=validate.Length(max=64))
    description = Text(blank=True, load_default="", validate=validate.Length(max=2000))
    synced = fields.Boolean(load_default=False)
    active = fields.Boolean(load_default=True)
    rule = Rule(load_default=list)


class LabelChangesSchema(_Strict):
    name = Text(validate=validate.Length(max=64))
    description = Text(blank=True, validate=validate.Length(max=2000))
    synced = fields.Boolean()
    active = fields.Boolean()
    rule = Rule()


# --- messages -----------------------------------------------------------------------------------
class MessageQuery(_Page):
    folder = fields.String(load_default="inbox", validate=validate.OneOf(FOLDERS))
    label = Id()
    contact = Text(validate=validate.Length(max=20))
    q = Text(validate=validate.Length(max=200))
    after = When()
    before = When()
    simulation = fields.Boolean(load_default=False)


class CountsQuery(_Strict):
    simulation = fields.Boolean(load_default=False)


class MessageActionSchema(_Strict):
    action = fields.String(required=True, validate=validate.OneOf(MESSAGE_ACTIONS))
    label = Id()

    @validates_schema
    def _label_for_labelling(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("action") in ("label", "unlabel") and not data.get("label"):
            raise ValidationError("A label is required for this action.", "label")


class BulkMessageActionSchema(MessageActionSchema):
    messages = fields.List(Id(), required=True, validate=validate.Length(min=1, max=500))


class ReplySchema(_Strict):
    text = Text(required=True, validate=validate.Length(max=4096))
    answer = Id()  # the ready-made answer the text started from (required by must_use_answers)


# --- cases --------------------------------------------------------------------------------------
class OpenCaseSchema(_Strict):
    summary = Text(required=True, validate=validate.Length(max=1000))
    partner = Id(required=True)
    user = Id(allow_none=True, load_default=None)
    message = Id()
    contact = Text(validate=validate.Length(max=20))
    reply = Text(validate=validate.Length(max=4096))
    answer = Id()  # the ready-made answer the first message started from

    @validates_schema
    def _one_source(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("message" in data) == ("contact" in data):
            raise ValidationError("Give either a message or a contact reference.", "message")


class CaseFilter(_Strict):
    """The case list's filters (also what a cases export takes)."""

    state = fields.String(validate=validate.OneOf(("open", "closed")))
    partner = Id()
    user = Id()
    label = Id()
    contact = Text(validate=validate.Length(max=20))
    opened_after = When()
    opened_before = When()


class CaseQuery(_Page, CaseFilter):
    pass


class NoteSchema(_Strict):
    note = Text(required=True, validate=validate.Length(max=10000))


class ReopenSchema(_Strict):
    note = Text(validate=validate.Length(max=10000))


class CaseSummarySchema(_Strict):
    summary = Text(required=True, validate=validate.Length(max=1000))


class ReassignSchema(_Strict):
    min_properties = 1  # the OpenAPI document says so too (services/cases/openapi.py)
    partner = Id()
    user = Id(allow_none=True)

    @validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give a partner, a user or both.", "partner")


class CaseLabelsSchema(_Strict):
    labels = fields.List(Id(), required=True, validate=validate.Length(max=100))


class TimelineQuery(_Page):
    pass


class NotificationQuery(_Page):
    unread = fields.Boolean(load_default=False)


# --- ready-made answers -------------------------------------------------------------------------
class Language(Text):
    """A language code (``pt``, ``es``, ``pt-br``...), stored lower case with ``-``."""

    default_error_messages = {"language": f"Must be {answers.LANGUAGE_RULE}."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = answers.language_code(super()._deserialize(value, attr, data, **kwargs))
        if code is None:
            raise self.make_error("language")
        return code


class AnswerTranslationSchema(_Strict):
    language = Language(required=True)
    question = Text(required=True, validate=validate.Length(max=answers.MAX_QUESTION))
    answer = Text(required=True, validate=validate.Length(max=answers.MAX_ANSWER))


def _one_per_language(translations: list[dict[str, Any]]) -> None:
    languages = [t["language"] for t in translations]
    if len(set(languages)) != len(languages):
        raise ValidationError("One translation per language.")


class AnswerSchema(_Strict):
    question = Text(required=True, validate=validate.Length(max=answers.MAX_QUESTION))
    answer = Text(required=True, validate=validate.Length(max=answers.MAX_ANSWER))
    language = Language(allow_none=True, load_default=None)
    labels = fields.List(Id(), load_default=list, validate=validate.Length(max=answers.MAX_LABELS))
    translations = fields.List(
        fields.Nested(AnswerTranslationSchema),
        load_default=list,
        validate=[validate.Length(max=answers.MAX_TRANSLATIONS), _one_per_language],
    )


class AnswerChangesSchema(_Strict):
    question = Text(validate=validate.Length(max=answers.MAX_QUESTION))
    answer = Text(validate=validate.Length(max=answers.MAX_ANSWER))
    language = Language(allow_none=True)
    labels = fields.List(Id(), validate=validate.Length(max=answers.MAX_LABELS))
    translations = fields.List(
        fields.Nested(AnswerTranslationSchema),
        validate=[validate.Length(max=answers.MAX_TRANSLATIONS), _one_per_language],
    )


class AnswerQuery(_Strict):
    q = Text(validate=validate.Length(max=200))
    label = Id()
    language = Language()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class AnswerTextQuery(_Strict):
    language = Language()


class AnswerImportSchema(_Strict):
    csv = fields.String(
        required=True, validate=validate.Length(min=1, max=answers.MAX_IMPORT_CHARS)
    )


# --- statistics ----------------------------------------------------------------------------------
class StatsQuery(_Strict):
    """A range of whole days in the org's timezone (both included); by default the last 30."""

    start = fields.Date(data_key="from")
    end = fields.Date(data_key="to")
    period = fields.String(load_default="day", validate=validate.OneOf(("day", "month")))

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise ValidationError("Must not be after 'to'.", "from")


class ActivityQuery(_Strict):
    start = fields.Date(data_key="from")
    end = fields.Date(data_key="to")
    partner = Id()

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise ValidationError("Must not be after 'to'.", "from")


class ExportQuery(_Page):
    pass
