"""The cases service's pure rules: visibility, the case state machine, pseudonyms, locks,
warnings, the labeler merge and cursors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.cases import domain
from services.cases.domain import (
    ADMINISTRATOR,
    AGENT,
    LOCK_DURATION,
    MANAGER,
    Access,
    Actor,
    CaseState,
    Conflict,
    InvalidCursor,
    can_manage_user,
    can_see_message,
    case_access,
    decode_cursor,
    display_value,
    encode_cursor,
    lock_holder,
    may_lock,
    merge_labeler_labels,
    needs_warning,
    next_state,
    pseudonym,
    restore_allowed,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def actor(role=AGENT, partner="p1", restricted=False, labels=()):
    return Actor(
        org="o",
        user_id="u1",
        name="Ana",
        role=role,
        partner_id=None if role == ADMINISTRATOR else partner,
        restricted=restricted,
        partner_labels=frozenset(labels),
    )


class TestVisibility:
    def test_admin_sees_every_message_even_unlabelled(self):
        assert can_see_message(actor(ADMINISTRATOR), set())

    def test_unrestricted_partner_sees_any_labelled_message_but_not_unlabelled(self):
        assert can_see_message(actor(), {"l9"})
        assert not can_see_message(actor(), set())

    def test_restricted_partner_sees_only_its_labels(self):
        restricted = actor(restricted=True, labels=["l1"])
        assert can_see_message(restricted, {"l1", "l2"})
        assert not can_see_message(restricted, {"l2"})

    def test_a_case_the_partner_sees_makes_its_messages_visible(self):
        restricted = actor(restricted=True, labels=["l1"])
        assert can_see_message(restricted, set(), Access.READ)

    def test_case_access(self):
        assert case_access(actor(ADMINISTRATOR), "p2", set()) is Access.UPDATE
        assert case_access(actor(partner="p2"), "p2", set()) is Access.UPDATE
        assert case_access(actor(partner="p1"), "p2", {"l1"}) is Access.READ
        assert case_access(actor(partner="p1"), "p2", set()) is Access.NONE
        assert case_access(actor(restricted=True, labels=["l1"]), "p2", {"l2"}) is Access.NONE

    @pytest.mark.parametrize(
        "who, partner, role, allowed",
        [
            (ADMINISTRATOR, None, ADMINISTRATOR, True),
            (MANAGER, "p1", AGENT, True),
            (MANAGER, "p1", MANAGER, True),
            (MANAGER, "p1", ADMINISTRATOR, False),
            (MANAGER, "p2", AGENT, False),
            (AGENT, "p1", AGENT, False),
        ],
    )
    def test_who_manages_users(self, who, partner, role, allowed):
        assert can_manage_user(actor(who), partner, role) is allowed


class TestCaseStateMachine:
    def test_open_closes_and_closed_reopens(self):
        assert next_state(CaseState.OPEN, "close") is CaseState.CLOSED
        assert next_state(CaseState.CLOSED, "reopen") is CaseState.OPEN

    @pytest.mark.parametrize(
        "state, command, code",
        [
            (CaseState.CLOSED, "close", "CASE_ALREADY_CLOSED"),
            (CaseState.OPEN, "reopen", "CASE_ALREADY_OPEN"),
            (CaseState.CLOSED, "reply", "CASE_CLOSED"),
            (CaseState.CLOSED, "reassign", "CASE_CLOSED"),
        ],
    )
    def test_invalid_transitions_conflict(self, state, command, code):
        with pytest.raises(Conflict) as raised:
            next_state(state, command)
        assert raised.value.code == code

    def test_notes_and_labels_work_on_closed_cases(self):
        assert next_state(CaseState.CLOSED, "note") is CaseState.CLOSED
        assert next_state(CaseState.CLOSED, "label") is CaseState.CLOSED

    def test_warning_only_for_cases_open_past_the_threshold(self):
        old = NOW - timedelta(days=8)
        assert needs_warning(old, CaseState.OPEN, NOW, 7)
        assert not needs_warning(NOW - timedelta(days=6), CaseState.OPEN, NOW, 7)
        assert not needs_warning(old, CaseState.CLOSED, NOW, 7)
        assert not needs_warning(old, CaseState.OPEN, NOW, None)

    def test_a_message_in_an_open_case_cannot_be_restored(self):
        assert not restore_allowed(CaseState.OPEN)
        assert restore_allowed(CaseState.CLOSED) and restore_allowed(None)


class TestPseudonym:
    def test_stable_short_and_readable(self):
        ref = pseudonym("salt", "org", "contact-1")
        assert ref == pseudonym("salt", "org", "contact-1")
        assert ref.startswith("C-") and len(ref) == 10
        assert not set(ref[2:]) & set("ILOU")

    def test_depends_on_salt_org_and_contact(self):
        refs = {
            pseudonym("salt", "org", "contact-1"),
            pseudonym("other salt", "org", "contact-1"),
            pseudonym("salt", "org2", "contact-1"),
            pseudonym("salt", "org", "contact-2"),
        }
        assert len(refs) == 4

    def test_the_long_form_extends_the_short_one(self):
        short = pseudonym("s", "o", "c")
        long = pseudonym("s", "o", "c", 12)
        assert long.startswith(short) and len(long) == 14

    def test_display_value_only_for_the_chosen_field(self):
        fields = {"age": "15", "phone": "+55 11 98765-4321"}
        assert display_value(fields, None) is None
        assert display_value(fields, "age") == "15"
        assert display_value(fields, "missing") is None


class TestLocks:
    def test_a_lock_holds_until_it_expires(self):
        until = NOW + LOCK_DURATION
        assert lock_holder("u1", until, NOW) == "u1"
        assert lock_holder("u1", until, until) is None
        assert lock_holder(None, None, NOW) is None

    def test_only_the_holder_may_extend_an_unexpired_lock(self):
        until = NOW + LOCK_DURATION
        assert may_lock("u1", "u1", until, NOW)
        assert not may_lock("u2", "u1", until, NOW)
        assert may_lock("u2", "u1", until, until + timedelta(seconds=1))


class TestLabelerMerge:
    def test_first_opinion_adds_its_labels(self):
        assert merge_labeler_labels(set(), set(), {"a", "b"}) == {"a", "b"}

    def test_hand_made_changes_survive_a_new_opinion(self):
        # a partner removed "a" and added "x" by hand; the labeler now also gives "c"
        current = {"b", "x"}
        assert merge_labeler_labels(current, {"a", "b"}, {"a", "b", "c"}) == {"b", "x", "c"}

    def test_labels_the_labeler_withdraws_go(self):
        assert merge_labeler_labels({"a", "b"}, {"a", "b"}, {"b"}) == {"b"}


class TestCursor:
    def test_round_trip(self):
        cursor = encode_cursor(NOW, "m-1")
        assert decode_cursor(cursor, datetime, str) == (NOW, "m-1")
        assert decode_cursor(encode_cursor(NOW, 2, "x"), datetime, int, str) == (NOW, 2, "x")

    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "not base64!",
            encode_cursor("yesterday", "m"),
            encode_cursor(NOW),
            encode_cursor(NOW, 5),
            encode_cursor(NOW.replace(tzinfo=None), "m"),
        ],
    )
    def test_garbage_is_refused(self, cursor):
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor, datetime, str)


# --- what a command does to a case ---------------------------------------------------------------
class TestCaseChanges:
    NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)

    def test_close_says_whether_it_is_the_first(self):
        first = domain.close_case(CaseState.OPEN, 0, self.NOW)
        again = domain.close_case(CaseState.OPEN, 1, self.NOW)
        assert first.what == "closed"
        assert first.sets == {"closed_on": self.NOW, "close_count": 1}
        assert first.data["first_close"] is True and again.data["first_close"] is False
        with pytest.raises(Conflict) as closed_twice:
            domain.close_case(CaseState.CLOSED, 1, self.NOW)
        assert closed_twice.value.code == "CASE_ALREADY_CLOSED"

    def test_reopen_clears_the_close_and_says_when(self):
        reopened = domain.reopen_case(CaseState.CLOSED, self.NOW)
        assert reopened.sets == {"closed_on": None, "reopened_on": self.NOW}
        assert reopened.data["opened_on"] == self.NOW.isoformat()
        with pytest.raises(Conflict):
            domain.reopen_case(CaseState.OPEN, self.NOW)

    def test_reassign_and_relabel_say_nothing_happened_when_nothing_changes(self):
        assert domain.reassign(CaseState.OPEN, ("p1", None), ("p1", None)) is None
        moved = domain.reassign(CaseState.OPEN, ("p1", "u1"), ("p2", None))
        assert moved is not None and moved.sets == {"partner_id": "p2", "user_id": None}
        with pytest.raises(Conflict):
            domain.reassign(CaseState.CLOSED, ("p1", None), ("p2", None))
        assert domain.relabel(CaseState.CLOSED, {"a"}, {"a"}) is None
        relabelled = domain.relabel(CaseState.CLOSED, {"a"}, {"b", "a"})
        assert relabelled is not None and relabelled.data == {"labels": ["a", "b"]}

    def test_notes_work_in_both_states_replies_only_while_open(self):
        assert domain.add_note(CaseState.CLOSED).what == "note_added"
        domain.check_state(CaseState.OPEN, "reply")
        with pytest.raises(Conflict):
            domain.check_state(CaseState.CLOSED, "reply")
