"""What the CasePro test orgs hold besides their contacts and messages: people, partners, groups,
fields, labels and their rules, ready-made answers. Plain data, read by tests/casepro/fixture.py.

Every rule test CasePro has is here (contains any/all/none, words, groups any/all/none, field),
and the cases an import must not get wrong: keywords with hyphens and spaces, accented keywords
(stored NFKD-decomposed and \\u-escaped, as CasePro stores them), a label without a rule, a
deleted label, a group without a flow-engine uuid in a rule, a keyword from an old rule set that
is not a word.
"""

from __future__ import annotations

import unicodedata
from typing import Any, NamedTuple


class UserT(NamedTuple):
    key: str  # the email's local part, and the manifest's name for the user
    full_name: str | None  # None: no profile (CasePro then shows first and last name)
    roles: str  # A administrators, M editors, Y viewers ("" none)
    partner: str | None
    active: bool = True
    must_use_faq: bool = False
    has_email: bool = True


USERS = (
    UserT("ana", "Ana Administradora", "A", None),
    UserT("bruno", "Bruno Costa", "AM", None),  # in two role tables: administrator wins
    UserT("carla", "Carla Souza", "M", "norte"),
    UserT("diego", "Diego Lima", "MY", "acolher"),  # manager wins over analyst
    UserT("elisa", "Élise Núñez", "Y", "norte", must_use_faq=True),
    UserT("fabio", "Fábio Rocha", "Y", "acolher"),
    UserT("gabi", "Gabriela Alves", "Y", "defensoria"),
    UserT("hugo", "Hugo Mendes", "Y", "norte", active=False),
    UserT("ivo", "Ivo Pereira", "M", "defensoria", has_email=False),
    UserT("julia", "Júlia Ramos", "Y", "antigo"),  # of an inactive partner
    UserT("kleber", None, "Y", "defensoria"),  # no profile: "Kleber Dias"
    UserT("lara", "Lara Gomes", "", "norte"),  # a partner's user without a role: not read
)
NO_PROFILE_NAME = ("Kleber", "Dias")
EXPECTED_ROLES = {"A": "administrator", "AM": "administrator", "M": "manager", "MY": "manager"}


class PartnerT(NamedTuple):
    key: str
    name: str
    description: str | None
    restricted: bool
    active: bool
    labels: tuple[str, ...]  # label names a restricted partner sees


PARTNERS = (
    PartnerT("norte", "Centro de Saúde Norte", "Atendimento em saúde", False, True, ()),
    PartnerT(
        "acolher",
        "ONG Acolher",
        "Apoio psicológico",
        True,
        True,
        ("Violência", "Autoestima", "Apagado"),
    ),
    PartnerT("defensoria", "Defensoria Pública", None, False, True, ()),
    PartnerT("antigo", "Antigo Parceiro", "Parceria encerrada", False, False, ()),
)


class GroupT(NamedTuple):
    key: str
    name: str
    synced: bool  # False: no uuid
    dynamic: bool = False
    active: bool = True
    visible: bool = True
    suspend_from: bool = False


GROUPS = (
    GroupT("jovens", "Jovens", True),
    GroupT("mulheres", "Mulheres", True),
    GroupT("rio", "Rio", True),
    GroupT("reporters", "Reporters", True, dynamic=True),
    GroupT("atendimento", "Em atendimento", True, suspend_from=True),
    GroupT("antigo", "Antigo grupo", True, active=False),
    GroupT("local", "Sem sincronização", False),
    GroupT("open", "Open Tickets", True, visible=False),
)

# key, label, value type, active, visible
FIELDS = (
    ("cidade", "Cidade", "T", True, True),
    ("idade", "Idade", "N", True, True),
    ("genero", "Gênero", "T", True, False),
    ("bairro", "Bairro", "T", False, False),
)
CITIES = ("Rio de Janeiro", "rio de janeiro", "Niterói", "São Paulo", "Duque de Caxias")
GENDERS = ("feminino", "masculino", "mulher", "outro")


def stored_keyword(keyword: str) -> str:
    """As CasePro stores a keyword: lower-cased and NFKD-decomposed (json.dumps then escapes
    the combining marks: "sau\\u0301de")."""
    return unicodedata.normalize("NFKD", keyword.lower())


def contains(quantifier: str, *keywords: str) -> dict[str, Any]:
    stored = [stored_keyword(k) for k in keywords]
    return {"type": "contains", "keywords": stored, "quantifier": quantifier}


def words(minimum: int) -> dict[str, Any]:
    return {"type": "words", "minimum": minimum}


def groups(quantifier: str, *keys: str) -> dict[str, Any]:
    """Group keys, made CasePro's local group ids when the org is built."""
    return {"type": "groups", "groups": list(keys), "quantifier": quantifier}


def field(key: str, *values: str) -> dict[str, Any]:
    return {"type": "field", "key": key, "values": list(values)}


class LabelT(NamedTuple):
    name: str
    description: str
    tests: tuple[dict[str, Any], ...] | None  # None: no rule
    synced: bool = True
    active: bool = True
    watchers: tuple[str, ...] = ()


LABELS = (
    LabelT(
        "Saúde",
        "Saúde em geral",
        (contains("any", "saúde", "médico", "hospital"),),
        watchers=("carla", "elisa"),
    ),
    LabelT(
        "Violência",
        "Violência e abuso",
        (contains("any", "violência", "abuso sexual", "agressão"),),
        watchers=("diego",),
    ),
    LabelT("Autoestima", "", (contains("any", "auto-estima", "autoestima"),)),
    LabelT("Ansiedade escolar", "", (contains("all", "ansiedade", "escola"),), synced=False),
    LabelT("Perguntas longas", "", (contains("none", "teste"), words(3)), synced=False),
    LabelT("Emprego", "", (contains("any", "emprego", "trabalho"), words(2))),
    LabelT("Jovens", "Grupo Jovens", (groups("any", "jovens"),)),
    LabelT("Mulheres jovens", "", (groups("all", "mulheres", "jovens"),)),
    LabelT("Fora do Rio", "", (groups("none", "rio"),), synced=False),
    LabelT("Rio de Janeiro", "", (field("cidade", "Rio de Janeiro"),)),
    LabelT("Gestação", "", (contains("any", "gravidez"), field("genero", "feminino", "mulher"))),
    LabelT("Pré-natal", "", (contains("any", "pré-natal", "posto de saúde", "gestante"),)),
    LabelT("Covid", "", (contains("any", "covid-19", "covid", "vacina"),)),
    LabelT("Moradia", "", (contains("any", "casa", "aluguel"), groups("any", "rio", "jovens"))),
    LabelT("Grupo antigo", "", (groups("any", "local", "jovens"),), synced=False),
    LabelT("Sem grupo", "", (groups("none", "local"),), synced=False),
    LabelT("Legado", "Palavras de antes das regras", (contains("any", "sos", "s.o.s"),)),
    LabelT("Denúncia", "Aplicado pelos fluxos", None),
    LabelT("Apagado", "", None, active=False),
    LabelT("Drogas", "", (contains("any", "droga", "álcool"), groups("any", "reporters"))),
)
DELETED_LABEL = "Apagado"

# question, answer, language, label names, translations (language, question, answer)
FAQS = (
    (
        "Onde encontro um posto de saúde?",
        "Procure a unidade básica de saúde mais próxima da sua casa.",
        "por",
        ("Saúde", "Pré-natal"),
        (
            ("spa", "¿Dónde hay un centro de salud?", "Busca el centro de salud más cercano."),
            ("eng", "Where is a health post?", "Look for the nearest health post."),
        ),
    ),
    (
        "Como denunciar violência?",
        "Ligue 180, a ligação é gratuita e anônima.",
        "por",
        ("Violência",),
        (("spa", "¿Cómo denunciar la violencia?", "Llama al 180, es gratis y anónimo."),),
    ),
    ("O que é autoestima?", "É como você se vê e se valoriza.", "por", ("Autoestima",), ()),
    ("Horário de atendimento", "Segunda a sexta, das 9h às 18h.", None, (), ()),
    (
        "What is covid-19?",
        "A disease caused by a coronavirus.",
        "eng",
        ("Covid",),
        (("por", "O que é covid-19?", "Uma doença causada por um coronavírus."),),
    ),
)

WORDS = (
    "oi", "preciso", "de", "ajuda", "com", "minha", "saúde", "SAÚDE", "médico", "hospital",
    "violência", "abuso  sexual", "auto-estima", "autoestima", "ansiedade", "escola", "trabalho",
    "emprego", "casa", "aluguel", "gravidez", "pré-natal", "posto de saúde", "covid-19", "vacina",
    "droga", "álcool", "#ajuda", "ajuda-me", "SOS", "obrigada", "😊", "teste", "bem-estar", "não",
    "sei", "o", "que", "fazer", "hoje", "amanhã", "¿dónde?", "help", "please", "\n", "s.o.s",
)  # fmt: skip
FIRST_NAMES = ("Maria", "João", "Ana", "Pedro", "Luíza", "Rafael", "Camila", "Thiago", "Bruna")
LAST_NAMES = ("Silva", "Santos", "Oliveira", "Souza", "Pereira", "Lima", "Carvalho", "Gomes")
