"""Benchmark the labeler's pure rule engine on one core.

    python bench/labeler_rules.py [--messages 100000] [--seed 1] [--hyphens]

Builds 50 and 1,000 labels of mixed kinds and a stream of synthetic messages
(multilingual text with accents, random flows, nodes, groups and fields, some
hitting labels), then prints messages per second and the average number of
labels matched per message. Target: more than 50,000 messages/s with 1,000 labels.
``--hyphens`` makes a tenth of the keywords hyphenated (auto-estima, covid-19) and
puts hyphenated words (ajuda-me) in the messages' everyday words too.
"""

from __future__ import annotations

import argparse
import random
import time
import unicodedata

from shared.rules import (
    FieldTest,
    GroupsTest,
    KeywordsTest,
    Label,
    LabelIndex,
    Message,
    StepTest,
    Test,
    WordCountTest,
)


def words_of(text: str) -> list[str]:
    return text.split()


# Everyday words of the languages partners see, with and without accents.
FILLER = words_of(
    """
i need to talk someone please my the and is a it in with what how where when can you
eu preciso de falar com alguém por favor meu minha não sim obrigado obrigada onde quando
je suis besoin parler avec quelqu'un s'il vous plaît merci où quand à très
nina hitaji kuongea na mtu tafadhali asante ndiyo hapana wapi lini sana
hola necesito hablar con alguien por favor gracias dónde cuándo también
"""
)
# Words that labels look for; messages use them now and then, in any case and
# with or without their accents.
TOPICS = words_of(
    """
help ajuda aide msaada ayuda violência violence vurugu abuse abuso sexual saúde health
afya salud médico doctor daktari hospital hospitali escola school shule école comida
food chakula dinheiro money pesa trabalho job kazi casa house nyumbani polícia police
polisi gravidez pregnancy mimba hiv sida aids teste test vaccine vacina chanjo malaria
febre fever homa dor pain maumivu medo fear hofu suicídio suicide depressão depression
"""
)
# With --hyphens: everyday words and keywords with hyphens, as in real Portuguese rule sets.
HYPHENATED_FILLER = words_of("ajuda-me diga-me quero-te self-help e-mail bem-vindo guarda-chuva")
HYPHENATED_TOPICS = words_of(
    "auto-estima bem-estar covid-19 pré-natal pós-parto família-acolhedora ex-namorado anti-hiv"
)
EMOJI = ["😀", "🙏", "❤️", "😢", "👍"]
STATES = words_of(
    """
Abia Adamawa Akwa-Ibom Anambra Bauchi Bayelsa Benue Borno Cross-River Delta Ebonyi Edo Ekiti
Enugu FCT Gombe Imo Jigawa Kaduna Kano Katsina Kebbi Kogi Kwara Lagos Nasarawa Niger Ogun Ondo
Osun Oyo Plateau Rivers Sokoto Taraba Yobe Zamfara
"""
)
LANGUAGES = ["eng", "por", "fra", "swa", "spa", "hau", "yor", "ibo"]
GENDERS = ["female", "male", "other"]
FIELD_VALUES = {"state": STATES, "language": LANGUAGES, "gender": GENDERS}
# An organisation with a thousand labels has many flows and groups too.
FLOWS = [f"flow-{i}" for i in range(40)]
NODES = [f"node-{i}" for i in range(15)]
GROUPS = [f"group-{i}" for i in range(400)]


def strip_accents_sometimes(rng: random.Random, word: str) -> str:
    if rng.random() < 0.3:
        word = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode()
    return word.upper() if rng.random() < 0.1 else word


def make_topic_words(rng: random.Random, count: int, hyphens: bool = False) -> list[str]:
    """The real topic words plus synthetic ones, so that 1,000 labels don't all share 80 words;
    with ``hyphens``, a tenth of them are hyphenated."""
    syllables = ["ka", "mo", "ré", "tu", "ção", "li", "na", "sé", "bo", "ü", "zi", "pa"]
    words = list(TOPICS) + (HYPHENATED_TOPICS if hyphens else [])
    while len(words) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if hyphens and rng.random() < 0.1:
            word += "-" + "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
        words.append(word)
    return words


def make_test(rng: random.Random, kind: str, topics: list[str]) -> Test:
    if kind == "step":
        pairs = {(rng.choice(FLOWS), rng.choice(NODES)) for _ in range(rng.randint(1, 3))}
        return StepTest(steps=tuple(sorted(pairs)))
    if kind in ("groups-any", "groups-all", "groups-none"):
        groups = tuple(rng.sample(GROUPS, rng.randint(1, 3)))
        return GroupsTest(quantifier=kind.removeprefix("groups-"), groups=groups)
    if kind in ("keywords-any", "keywords-all", "keywords-none"):
        keywords = rng.sample(topics, rng.randint(1, 4))
        if rng.random() < 0.2:  # a multi-word keyword
            keywords[0] = f"{keywords[0]} {rng.choice(topics)}"
        return KeywordsTest(quantifier=kind.removeprefix("keywords-"), keywords=tuple(keywords))
    if kind.startswith("field-"):
        key = kind.removeprefix("field-")
        return FieldTest(key=key, values=tuple(rng.sample(FIELD_VALUES[key], rng.randint(1, 2))))
    if kind == "word_count":
        return WordCountTest(minimum=rng.randint(3, 25))
    raise ValueError(kind)


# Rules as (weight, test kinds): mostly single tests, some combinations, and a
# very few with no anchor at all (evaluated for every message). Broad tests such
# as a gender only come combined with something narrower, as in a real org.
RULE_SHAPES: list[tuple[float, tuple[str, ...]]] = [
    (20, ("step",)),
    (15, ("groups-any",)),
    (25, ("keywords-any",)),
    (5, ("keywords-all",)),
    (5, ("field-state",)),
    (6, ("step", "keywords-any")),
    (5, ("groups-any", "keywords-any")),
    (4, ("keywords-any", "word_count")),
    (3, ("keywords-any", "field-gender")),
    (3, ("field-language", "groups-all")),
    (3, ("step", "keywords-none")),
    (3, ("groups-any", "groups-none")),
    (0.5, ("keywords-none", "word_count")),
    (0.2, ("word_count",)),
]


def make_labels(rng: random.Random, count: int, topics: list[str]) -> list[Label]:
    weights = [weight for weight, _ in RULE_SHAPES]
    labels = []
    for i in range(count):
        (_, kinds) = rng.choices(RULE_SHAPES, weights)[0]
        tests = tuple(make_test(rng, kind, topics) for kind in kinds)
        labels.append(Label(f"label-{i}", f"Label {i}", rng.random() < 0.5, True, tests))
    return labels


def make_messages(
    rng: random.Random, count: int, topics: list[str], hyphens: bool = False
) -> list[Message]:
    filler = FILLER + HYPHENATED_FILLER if hyphens else FILLER
    messages = []
    for _ in range(count):
        words = [rng.choice(filler) for _ in range(rng.randint(1, 18))]
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
            words.insert(rng.randrange(len(words) + 1), rng.choice(topics))
        words = [strip_accents_sometimes(rng, word) for word in words]
        if rng.random() < 0.2:
            words.append(rng.choice(EMOJI))
        separator = rng.choice([" ", " ", " ", ", ", "\n"])
        text = separator.join(words) + rng.choice(["", "", ".", "!", "?", "..."])
        if rng.random() < 0.03:
            text = None  # attachments only
        in_flow = rng.random() < 0.9
        fields = {
            "state": rng.choice(STATES + [None]),
            "language": rng.choice(LANGUAGES),
            "gender": rng.choice(GENDERS + [None]),
            "name": "Ana Sílvia",
            "registered_on": "2024-05-01",
        }
        messages.append(
            Message(
                text=text,
                flow=rng.choice(FLOWS) if in_flow else None,
                node=rng.choice(NODES) if in_flow else None,
                groups=frozenset(rng.sample(GROUPS, rng.randint(0, 6))),
                fields=fields,
            )
        )
    return messages


def run(label_count: int, messages: list[Message], topics: list[str], seed: int) -> None:
    labels = make_labels(random.Random(seed), label_count, topics)
    started = time.perf_counter()
    index = LabelIndex(labels)
    built = time.perf_counter() - started

    matched = 0
    started = time.perf_counter()
    for message in messages:
        matched += len(index.match(message))
    elapsed = time.perf_counter() - started
    print(
        f"{label_count:>5} labels: {len(messages) / elapsed:>9,.0f} messages/s "
        f"({elapsed:.2f} s), {matched / len(messages):.2f} labels matched per message, "
        f"index built in {built * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hyphens", action="store_true", help="hyphenated keywords and words")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    topics = make_topic_words(rng, 1500, args.hyphens)
    messages = make_messages(rng, args.messages, topics, args.hyphens)
    for label_count in (50, 1000):
        run(label_count, messages, topics, args.seed)


if __name__ == "__main__":
    main()
