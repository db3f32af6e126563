"""A worker's chores run at start, then on their clock, and a failing one stops nothing."""

import logging

from shared.bus.chores import Chore, Chores


def test_chores_run_at_the_first_turn_then_every_period(caplog):
    now = [100.0]
    ran: list[str] = []

    def broken():
        ran.append("broken")
        raise OSError("disk gone")

    chores = Chores(
        [Chore("tick", 10, lambda: ran.append("tick")), Chore("broken", 30, broken)],
        clock=lambda: now[0],
    )
    with caplog.at_level(logging.ERROR):
        chores.run_due()
    assert ran == ["tick", "broken"]  # the failure did not stop the other chore
    assert "chore 'broken' failed" in caplog.text
    for moment, expected in ((105, []), (110, ["tick"]), (119, []), (130, ["tick", "broken"])):
        ran.clear()
        now[0] = moment
        chores.run_due()
        assert ran == expected, moment
