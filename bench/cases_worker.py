"""CPU of the cases worker per batch, in one process on PostgreSQL: the batches a worker gets at
a trickle (bench/pipeline.py at 100 webhooks/s: a few message.received, then, in another batch,
the labeler's message.labeled of the same messages; with ``--together``, both in one batch, as
the worker now holds a message.received back for its labels), handled as the worker handles
them (``dispatch_batch`` of the messages subscription), without RabbitMQ.

The pipeline's CPU per message varies by a millisecond from one run to the next; this says what
a change to the cases worker's own work does, in runs a minute apart. It counts this process's
CPU (PostgreSQL's is not in it) and the wall-clock time of a batch, its waits on PostgreSQL
included: a worker draining a backlog handles one batch after the other.

    .venv/bin/python bench/cases_worker.py [--batch 5] [--pairs 1000] [--contacts 0]
        [--together] [--profile]

``--contacts N`` draws the messages' contacts from N contacts (a poll's replies come from
contacts the org mostly knows); 0, the default, gives each message a contact new to the org.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.cases import WORDS  # noqa: E402 (the inbox benchmark's words)
from bench.ingest import DATABASE_URL  # noqa: E402

WARM_UP = 20  # rounds, not measured


def flat(rounds: list[list[list[bytes]]]) -> list[list[bytes]]:
    """The batches of these rounds, in order."""
    return [batch for batches in rounds for batch in batches]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=5, help="messages per batch")
    parser.add_argument("--pairs", type=int, default=1000, help="rounds measured")
    parser.add_argument("--contacts", type=int, default=0, help="0: a new contact each")
    parser.add_argument(
        "--together", action="store_true", help="each message and its labels in one batch"
    )
    parser.add_argument("--profile", action="store_true", help="then a cProfile of CPU time")
    args = parser.parse_args()
    from services.stack import drop_namespace
    from shared.bus.dispatch import dispatch_batch
    from shared.settings import Settings
    from tests.cases_helpers import CasesWorld, message_labeled, message_received

    settings = Settings(database_url=DATABASE_URL, namespace=f"bench{uuid.uuid4().hex[:6]}")
    world = CasesWorld(settings)
    try:
        label = world.label()
        subscription = world.subscriptions["messages"]
        rng = random.Random(1)
        pool = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(args.contacts)]
        rounds = []  # a round: the messages' batches, received then labelled, or one of both
        for _ in range(WARM_UP + args.pairs * (2 if args.profile else 1)):
            received = [
                message_received(
                    text=" ".join(rng.choices(WORDS, k=rng.randint(3, 15))),
                    contact=rng.choice(pool) if pool else None,
                )
                for _ in range(args.batch)
            ]
            first = [e.body() for e in received]
            labeled = [message_labeled(e, [label]).body() for e in received]
            rounds.append([first + labeled] if args.together else [first, labeled])
        for bodies in flat(rounds[:WARM_UP]):
            dispatch_batch(subscription, bodies)
        measured = flat(rounds[WARM_UP : WARM_UP + args.pairs])
        started, wall = time.process_time(), time.perf_counter()
        for bodies in measured:
            dispatch_batch(subscription, bodies)
        used, wall = time.process_time() - started, time.perf_counter() - wall
        print(
            f"cases worker, {args.pairs} x {args.batch} messages, "
            + ("each with its labels in one batch" if args.together else "received then labelled")
            + f", contacts: {args.contacts or 'new each'}: "
            f"{1000 * used / len(measured):.2f} ms of CPU "
            f"per batch, {1000 * used / (args.pairs * args.batch):.2f} ms per message; "
            f"{1000 * wall / len(measured):.2f} ms of wall-clock time per batch (its waits on "
            "PostgreSQL too: what a worker draining a backlog takes per batch)"
        )
        if args.profile:
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            for bodies in flat(rounds[WARM_UP + args.pairs :]):
                dispatch_batch(subscription, bodies)
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    finally:
        world.close()
        drop_namespace(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
