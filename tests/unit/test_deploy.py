"""docker-compose.yml, deploy/Dockerfile and the proxy's config, checked statically.

No Docker engine runs where the tests run, so the compose file is read as data: every command is
a real subcommand, every variable one the settings read, every service that needs PostgreSQL or
RabbitMQ waits on their health, nothing that scales has a fixed name or host port, and the proxy
routes to services that exist. Each check is a function returning its problems, and each is
shown to find a problem in a deliberately broken copy.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services import registry
from services.cases.app import MAX_BODY as CASES_MAX_BODY
from services.cli import build_parser
from shared.settings import ENVIRONMENT, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
IMAGE = "upartners:latest"
ENTRYPOINT = ["upartners"]
# What a container of the image may run: the processes and the operator's one-shot steps.
ROLES = {"web", "worker", "relay", "db", "broker"}
RESTARTS = {"always", "unless-stopped"}
OPS_PATHS = ("/healthz", "/readyz", "/metrics")

Compose = dict[str, Any]


# --- reading the compose file -------------------------------------------------------------------
_VARIABLE = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_]\w*)")


def variables_without_default(value: Any) -> list[str]:
    """``${NAME}`` / ``$NAME`` with no default: compose would put an empty string there."""
    found: list[str] = []
    for text in strings_in(value):
        for match in _VARIABLE.finditer(text):
            braced = match.group("braced")
            if match.group("bare") or (braced is not None and not re.search(r":?-", braced)):
                found.append(match.group(0))
    return found


def interpolate(value: Any) -> Any:
    """Compose's interpolation with every variable unset: ``${NAME:-default}`` gives the default.

    Also gives every service its own copies of the maps YAML anchors share."""
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if isinstance(value, str):

        def default(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            parts = re.split(r":?-", match.group("braced") or "", maxsplit=1)
            return parts[1] if len(parts) == 2 else ""  # no default: compose gives ""

        return _VARIABLE.sub(default, value)
    return value


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, str):
        yield value


def load_compose(path: Path = COMPOSE_FILE) -> Compose:
    return interpolate(yaml.safe_load(path.read_text()))


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", ...]
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command or []]


def uses_image(service: dict[str, Any]) -> bool:
    return service.get("image") == IMAGE


def parse(parser_factory: Callable[[], Any], args: list[str]) -> tuple[Any, str | None]:
    """Parse like the process would; an argparse error becomes the problem's text."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parser_factory().parse_args(args), None
    except SystemExit:
        lines = stderr.getvalue().strip().splitlines()
        return None, lines[-1] if lines else "exits instead of running"


def parser_of(service: dict[str, Any]) -> tuple[Callable[[], Any] | None, str]:
    """The argument parser that reads this service's ``command``."""
    entrypoint = argv(service.get("entrypoint"))
    if not entrypoint or entrypoint == ENTRYPOINT:
        return build_parser, "upartners"
    if len(entrypoint) == 3 and entrypoint[:2] == ["python", "-m"]:
        module = importlib.import_module(f"{entrypoint[2]}.__main__")
        return getattr(module, "build_parser", None), entrypoint[2]
    return None, " ".join(entrypoint)


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test") or []
    if isinstance(test, str):
        return shlex.split(test)
    if test[:1] == ["CMD-SHELL"]:
        return shlex.split(" ".join(test[1:]))
    return [str(a) for a in test[1:]] if test[:1] == ["CMD"] else []


def bind_port(args: Any) -> int | None:
    bind = getattr(args, "bind", None)
    return int(bind.rsplit(":", 1)[1]) if bind else None


# --- the checks ---------------------------------------------------------------------------------
def check_commands(compose: Compose) -> list[str]:
    """Every command of the image, and every ``upartners`` health check, parses."""
    problems = []
    for name, service in compose["services"].items():
        if uses_image(service):
            factory, program = parser_of(service)
            if factory is None:
                problems.append(f"{name}: no argument parser to check `{program}` against")
                continue
            args, error = parse(factory, argv(service.get("command")))
            if error:
                problems.append(
                    f"{name}: `{program} {shlex.join(argv(service.get('command')))}`"
                    f" does not parse: {error}"
                )
            elif program == "upartners" and args.command not in ROLES:
                problems.append(f"{name}: `upartners {args.command}` is not a process role")
            elif program == "upartners" and args.command == "web":
                host = args.bind.rsplit(":", 1)[0]
                if host not in ("0.0.0.0", "[::]", "::"):
                    problems.append(f"{name}: binds {args.bind}, unreachable from the proxy")
        check = healthcheck_argv(service)
        if check[:1] == ["upartners"]:
            args, error = parse(build_parser, check[1:])
            if error:
                problems.append(f"{name}: health check `{shlex.join(check)}`: {error}")
            elif args.command != "health":
                problems.append(f"{name}: health check runs `upartners {args.command}`")
            elif args.port is None and not environment_of(service).get("UPARTNERS_OPS_PORT"):
                problems.append(f"{name}: `upartners health` without --port or UPARTNERS_OPS_PORT")
    return problems


def check_environment(compose: Compose) -> list[str]:
    """Every UPARTNERS_* variable is one the settings read, and they accept its value."""
    problems = [
        f"unknown variable {text.partition('=')[0]}"
        for text in strings_in(compose)
        if re.fullmatch(r"UPARTNERS_\w+(=.*)?", text, re.S)
        and text.partition("=")[0] not in ENVIRONMENT
    ]
    for name, service in compose["services"].items():
        env = environment_of(service)
        try:
            Settings.from_env(env)
        except Exception as exc:
            problems.append(f"{name}: the settings refuse its environment: {exc}")
    return sorted(set(problems))


# The variable, the image its server runs, the URL schemes.
NEEDS = {
    "UPARTNERS_DATABASE_URL": ("postgres", ("postgresql",)),
    "UPARTNERS_BROKER_URL": ("rabbitmq", ("amqp", "amqps")),
}


def check_dependencies(compose: Compose) -> list[str]:
    """A service that needs PostgreSQL or RabbitMQ names a compose service and waits on its
    health; every dependency exists and can become what is waited for."""
    services = compose["services"]
    problems = []
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on is a list (no health condition)")
            depends_on = {dep: {} for dep in depends_on}
        for dep, spec in depends_on.items():
            if dep not in services:
                problems.append(f"{name}: depends on {dep}, which is not a service")
            elif spec.get("condition") == "service_healthy" and not services[dep].get(
                "healthcheck"
            ):
                problems.append(f"{name}: waits on the health of {dep}, which has no health check")
        env = environment_of(service)
        for variable, (image, schemes) in NEEDS.items():
            if variable not in env:
                continue
            url = urlsplit(env[variable])
            host = url.hostname
            if url.scheme.split("+")[0] not in schemes:
                problems.append(f"{name}: {variable} is not a {'/'.join(schemes)} URL")
            if host not in services:
                problems.append(f"{name}: {variable} names host {host}, not a compose service")
                continue
            if not str(services[host].get("image", "")).startswith(image):
                problems.append(f"{name}: {variable} points at {host}, which does not run {image}")
            condition = (depends_on.get(host) or {}).get("condition")
            if condition != "service_healthy":
                problems.append(f"{name}: needs {host} but does not wait on its health")
    return problems


def check_shape(compose: Compose) -> list[str]:
    """Scalable (no fixed names, no host ports on the image), restarted, health-checked; the fake
    only behind a profile."""
    problems = []
    for name, service in compose["services"].items():
        if "container_name" in service:
            problems.append(f"{name}: container_name stops it from scaling")
        if uses_image(service) and service.get("ports"):
            problems.append(f"{name}: a host port stops it from scaling (the proxy is the door)")
        if service.get("restart") not in RESTARTS:
            problems.append(f"{name}: restart is {service.get('restart')!r}")
        healthcheck = service.get("healthcheck") or {}
        if not healthcheck.get("test") or healthcheck.get("disable"):
            problems.append(f"{name}: no health check")
        entrypoint = argv(service.get("entrypoint"))
        if any(part.startswith("fakes") for part in entrypoint) and not service.get("profiles"):
            problems.append(f"{name}: a fake outside a profile would start by default")
    if not any(
        uses_image(s) and parser_of(s)[1] != "upartners" for s in compose["services"].values()
    ):
        problems.append("no service runs the contract fake")
    return problems


# --- the proxy (nginx) --------------------------------------------------------------------------
Directive = tuple[str, list[str], list | None]
_NGINX_TOKEN = re.compile(
    r"#[^\n]*|'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"|([{};])|([^\s{};'\"]+)"
)


def parse_nginx(text: str) -> list[Directive]:
    """nginx's syntax, lightly: directives with their arguments and blocks (quotes respected)."""
    tokens: list[tuple[str, bool]] = []  # (text, is it a brace or semicolon)
    for match in _NGINX_TOKEN.finditer(text):
        single, double, special, word = match.groups()
        if special:
            tokens.append((special, True))
        elif word is not None:
            tokens.append((word, False))
        elif single is not None or double is not None:
            tokens.append((single if single is not None else double, False))

    def block(i: int) -> tuple[list[Directive], int]:
        out: list[Directive] = []
        words: list[str] = []
        while i < len(tokens):
            token, special = tokens[i]
            i += 1
            if not special:
                words.append(token)
            elif token == ";":
                out.append((words[0], words[1:], None))
                words = []
            elif token == "{":
                children, i = block(i)
                out.append((words[0], words[1:], children))
                words = []
            else:
                return out, i
        return out, i

    return block(0)[0]


def directive(block: list[Directive], name: str) -> list[str] | None:
    return next((args for n, args, _ in block if n == name), None)


def select_location(server: list[Directive], uri: str) -> list[Directive] | None:
    """The location nginx picks for ``uri``: exact, then ^~ prefix, then the first regex, then
    the longest prefix."""
    prefixes, regexes = [], []
    for name, args, children in server:
        if name != "location" or children is None or args[0].startswith("@"):
            continue
        modifier, path = (args[0], args[1]) if len(args) == 2 else ("", args[0])
        if modifier == "=" and uri == path:
            return children
        if modifier in ("", "^~") and uri.startswith(path):
            prefixes.append((len(path), modifier, children))
        if modifier in ("~", "~*") and re.search(path, uri, re.I if modifier == "~*" else 0):
            regexes.append(children)
    longest = max(prefixes, key=lambda p: p[0], default=None)
    if longest and longest[1] == "^~":
        return longest[2]
    if regexes:
        return regexes[0]
    return longest[2] if longest else None


def upstream_of(
    location: list[Directive], server: list[Directive], conf: list[Directive]
) -> str | None:
    """``host:port`` a location proxies to, through ``set $var`` and ``upstream`` blocks."""
    target = directive(location, "proxy_pass")
    if not target:
        return None
    address = urlsplit(target[0]).netloc
    for block in (location, server):
        for name, args, _ in block:
            if name == "set" and "$" in address and address == args[0]:
                address = args[1]
    for name, args, children in conf:
        if name == "upstream" and args[0] == address:
            return directive(children or [], "server")[0]
    return address


def body_limit(location: list[Directive], server: list[Directive]) -> int:
    size = (
        directive(location, "client_max_body_size")
        or directive(server, "client_max_body_size")
        or ["1m"]
    )
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", size[0]).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def proxy_service(compose: Compose) -> tuple[str, dict[str, Any]] | None:
    return next(
        (
            (n, s)
            for n, s in compose["services"].items()
            if str(s.get("image", "")).startswith("nginx")
        ),
        None,
    )


def proxy_conf_path(service: dict[str, Any], root: Path) -> Path | None:
    for volume in service.get("volumes") or []:
        source, _, target = str(volume).partition(":")
        if target.startswith("/etc/nginx/") and source.endswith(".conf"):
            return (root / source).resolve()
    return None


def web_services(compose: Compose) -> dict[str, tuple[str, int | None]]:
    """Compose service -> (the web service it runs, its port)."""
    found = {}
    for name, service in compose["services"].items():
        if uses_image(service) and parser_of(service)[1] == "upartners":
            args, error = parse(build_parser, argv(service.get("command")))
            if not error and args.command == "web":
                found[name] = (args.service, bind_port(args))
    return found


def check_proxy(compose: Compose, conf_text: str | None = None, root: Path = ROOT) -> list[str]:
    """One entry point: /api/ to the cases web service, webhooks to ingest, each at its port and
    body limit, health and metrics refused, every upstream a compose service."""
    found = proxy_service(compose)
    if found is None:
        return ["no proxy service (nginx)"]
    name, service = found
    problems = []
    if not service.get("ports"):
        problems.append(f"{name}: publishes no port")
    path = proxy_conf_path(service, root)
    if conf_text is None:
        if path is None or not path.is_file():
            return problems + [f"{name}: its config file {path} does not exist"]
        conf_text = path.read_text()
    conf = parse_nginx(conf_text)
    published = {str(p).rsplit(":", 1)[-1] for p in service.get("ports") or []}
    servers = [c for n, _, c in conf if n == "server" and c is not None]
    public = [
        s
        for s in servers
        if any(a[0].rsplit(":", 1)[-1] in published for n, a, _ in s if n == "listen")
    ]
    if not public:
        return problems + [f"{name}: no server listens on the published port {published}"]
    server = public[0]
    if directive(server, "resolver") is None:
        problems.append(f"{name}: no resolver: replicas added by --scale would get no traffic")
    webs = web_services(compose)
    for name_, args, children in server:
        if name_ == "location" and children and (upstream := upstream_of(children, server, conf)):
            host, _, port = upstream.rpartition(":")
            if host not in compose["services"]:
                problems.append(f"proxy: {' '.join(args)} goes to {host}, not a compose service")
            elif host not in webs or str(webs[host][1]) != port:
                problems.append(f"proxy: {' '.join(args)} goes to {upstream}, not a web port")
            if "$" not in urlsplit(directive(children, "proxy_pass")[0]).netloc:
                problems.append(f"proxy: {' '.join(args)} resolves {host} only once, at start")
    routes = {
        "/api/v1/cases": ("cases", CASES_MAX_BODY),
        "/": ("cases", CASES_MAX_BODY),
        "/inbox": ("cases", CASES_MAX_BODY),
        "/webhooks/demo/flow": ("ingest", None),
    }
    for uri, (wanted, limit) in routes.items():
        location = select_location(server, uri)
        upstream = location and upstream_of(location, server, conf)
        host = upstream.rpartition(":")[0] if upstream else None
        if webs.get(host, ("",))[0] != wanted:
            problems.append(f"proxy: {uri} goes to {host}, not the {wanted} web service")
            continue
        if limit is None:  # the ingest's own setting
            limit = Settings.from_env(environment_of(compose["services"][host])).max_body
        if body_limit(location, server) != limit:
            problems.append(
                f"proxy: {uri} accepts {body_limit(location, server)} bytes, not {limit}"
            )
    for uri in OPS_PATHS:
        location = select_location(server, uri) or []
        refused = directive(location, "deny") == ["all"] or (
            (directive(location, "return") or ["200"])[0].startswith("4")
        )
        if not refused:
            problems.append(f"proxy: {uri} is public")
    return problems


# --- the image ----------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (parts[0].upper(), parts[1].strip() if len(parts) > 1 else "")
        for line in joined.splitlines()
        if (parts := line.strip().split(None, 1))
    ]


def check_dockerfile(text: str, pyproject: dict[str, Any]) -> list[str]:
    """Non-root, ``upartners`` as the entrypoint, every package (and the readme) copied in."""
    instructions = dockerfile_instructions(text)
    problems = []
    users = [args for instr, args in instructions if instr == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"runs as {users[-1] if users else 'root'}")
    elif not users[-1].split(":")[0].isdigit():
        problems.append(f"USER {users[-1]} is not numeric")
    entrypoints = [args for instr, args in instructions if instr == "ENTRYPOINT"]
    if not entrypoints or json.loads(entrypoints[-1]) != ENTRYPOINT:
        problems.append(f"ENTRYPOINT is {entrypoints[-1] if entrypoints else 'unset'}")
    copied = set()
    for instr, args in instructions:
        if instr == "COPY" and "--from" not in args:
            words = [w for w in args.split() if not w.startswith("--")]
            copied.update(w.rstrip("/") for w in words[:-1])
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {pattern.split(".")[0].rstrip("*") for pattern in include}
    needed |= {"pyproject.toml", pyproject["project"].get("readme", "pyproject.toml")}
    problems += [f"{path} is not copied into the image" for path in sorted(needed - copied)]
    return problems


def check_build(compose: Compose, root: Path = ROOT) -> list[str]:
    """Every service of the image builds it from the same Dockerfile, which exists."""
    problems = []
    for name, service in compose["services"].items():
        if uses_image(service):
            build = service.get("build") or {}
            dockerfile = root / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: builds from {dockerfile}, which does not exist")
    return problems


CHECKS: dict[str, Callable[[Compose], list[str]]] = {
    "commands": check_commands,
    "environment": check_environment,
    "dependencies": check_dependencies,
    "shape": check_shape,
    "proxy": check_proxy,
    "build": check_build,
}


# --- the real files pass ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


@pytest.mark.parametrize("check", CHECKS)
def test_the_compose_file_passes(compose, check):
    assert CHECKS[check](compose) == []


def test_every_compose_variable_has_a_default():
    """`docker compose up` must just work without a .env file."""
    assert variables_without_default(yaml.safe_load(COMPOSE_FILE.read_text())) == []


def test_every_process_of_the_product_is_a_service(compose):
    commands = {
        tuple(argv(s.get("command"))[:2]) for s in compose["services"].values() if uses_image(s)
    }
    for service in registry.SERVICES:  # every process of every service runs in compose
        for process in service.processes:
            kind, name = process.split("-", 1)
            assert (kind, name) in commands, process


def test_the_dockerfile_passes():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert check_dockerfile(text, pyproject) == []


def test_the_build_context_leaves_out_what_the_image_does_not_need():
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var", "tests", "bench", "**/__pycache__", ".env"} <= ignored
    assert not ignored & {"shared", "services", "fakes", "deploy", "pyproject.toml", "README.md"}


def test_the_installed_package_carries_every_migration_file():
    """The image installs the package (pip install .), not the checkout: a migration file that
    the package data leaves out is missing there (script.py.mako once was, and `upartners db
    revision` failed in the container)."""
    import fnmatch

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["*"]
    files = [
        path.relative_to(service)  # as the patterns see it: migrations/..., per package
        for service in (ROOT / "services").iterdir()
        for path in (service / "migrations").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert files
    left_out = [f for f in files if not any(fnmatch.fnmatch(str(f), p) for p in patterns)]
    assert left_out == []


# --- each check finds a broken file -------------------------------------------------------------
def broken(compose: Compose, change: Callable[[Compose], None]) -> Compose:
    copy_ = copy.deepcopy(compose)
    change(copy_)
    return copy_


def update(name: str, **fields: Any) -> Callable[[Compose], None]:
    return lambda c: c["services"][name].update(fields)


def drop(name: str, *path: str) -> Callable[[Compose], None]:
    """Remove ``services.NAME.PATH...`` (the last key of the path)."""

    def change(c: Compose) -> None:
        node = c["services"][name]
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1])

    return change


def set_env(name: str, variable: str, value: str) -> Callable[[Compose], None]:
    return lambda c: c["services"][name].setdefault("environment", {}).__setitem__(variable, value)


def rename(old: str, new: str) -> Callable[[Compose], None]:
    return lambda c: c["services"].__setitem__(new, c["services"].pop(old))


PG_URL_ON_DB = "postgresql+psycopg://u:p@db:5432/upartners"
BREAKAGES: list[tuple[str, str, Callable[[Compose], None]]] = [
    # (the check that must complain, what is broken, the change)
    ("commands", "typo in a subcommand", update("labeler", command=["wroker", "labeler"])),
    ("commands", "a worker of no service", update("labeler", command=["worker", "labeller"])),
    (
        "commands",
        "an operator tool as a process",
        update("labeler", command=["labeler", "relabel"]),
    ),
    (
        "commands",
        "a web process on loopback",
        update("cases", command=["web", "cases", "--bind", "127.0.0.1:8000"]),
    ),
    ("commands", "the fake with an unknown seed", update("rapidpro-fake", command=["--seed", "x"])),
    (
        "commands",
        "a health check with a bad option",
        update("cases", healthcheck={"test": ["CMD", "upartners", "health", "--prot", "8000"]}),
    ),
    (
        "commands",
        "a worker's health check without its ops port",
        drop("labeler", "environment", "UPARTNERS_OPS_PORT"),
    ),
    ("environment", "an unknown variable", set_env("labeler", "UPARTNERS_PREFECTH", "10")),
    ("environment", "a value the settings refuse", set_env("labeler", "UPARTNERS_PREFETCH", "x")),
    ("environment", "an invalid log format", set_env("cases", "UPARTNERS_LOG_FORMAT", "xml")),
    (
        "dependencies",
        "a database host that is no service",
        set_env("labeler", "UPARTNERS_DATABASE_URL", PG_URL_ON_DB),
    ),
    (
        "dependencies",
        "the broker URL on the database",
        set_env("labeler", "UPARTNERS_BROKER_URL", "amqp://u:p@postgres:5672/%2F"),
    ),
    (
        "dependencies",
        "no wait on the broker's health",
        lambda c: c["services"]["labeler"]["depends_on"]["rabbitmq"].update(
            condition="service_started"
        ),
    ),
    ("dependencies", "no wait on the database at all", drop("cases", "depends_on", "postgres")),
    ("dependencies", "depends_on as a list", update("cases", depends_on=["postgres", "rabbitmq"])),
    ("shape", "a fixed container name", update("labeler", container_name="labeler")),
    ("shape", "a host port on a web process", update("cases", ports=["8001:8000"])),
    ("shape", "no restart policy", drop("labeler-relay", "restart")),
    ("shape", "no health check", drop("flowbridge", "healthcheck")),
    ("shape", "the fake started by default", drop("rapidpro-fake", "profiles")),
    ("proxy", "no proxy", lambda c: c["services"].pop("proxy")),
    (
        "proxy",
        "a config file that does not exist",
        update("proxy", volumes=["./deploy/nginx/nope.conf:/etc/nginx/conf.d/default.conf:ro"]),
    ),
    ("proxy", "the cases web service renamed", rename("cases", "partner-api")),
    (
        "proxy",
        "a webhook limit above the proxy's",
        set_env("ingest", "UPARTNERS_MAX_BODY", "1048576"),
    ),
    (
        "build",
        "a Dockerfile that does not exist",
        update("labeler", build={"context": ".", "dockerfile": "deploy/Nope"}),
    ),
]


@pytest.mark.parametrize(
    ("check", "change"),
    [(check, change) for check, _, change in BREAKAGES],
    ids=[f"{check}: {what}" for check, what, _ in BREAKAGES],
)
def test_each_check_finds_a_broken_compose_file(compose, check, change):
    assert CHECKS[check](broken(compose, change)) != []


def real_conf() -> str:
    return (ROOT / "deploy" / "nginx" / "upartners.conf").read_text()


@pytest.mark.parametrize(
    "edit",
    [
        ("set $cases_upstream cases:8000;", "set $cases_upstream casez:8000;"),
        ("set $ingest_upstream ingest:8000;", "set $ingest_upstream ingest:8080;"),
        ("set $cases_upstream cases:8000;", "set $cases_upstream ingest:8000;"),
        ("proxy_pass http://$ingest_upstream;", "proxy_pass http://ingest:8000;"),
        ("resolver 127.0.0.11", "# resolver 127.0.0.11"),
        ("client_max_body_size 256k;", "client_max_body_size 10m;"),
        ("client_max_body_size 1m;", "client_max_body_size 256k;"),
        ("location ~ ^/(healthz|readyz|metrics)(/|$)", "location ~ ^/(healthz|readyz)(/|$)"),
        ("listen 8000;", "listen 8080;"),
    ],
    ids=lambda edit: edit[1],
)
def test_the_proxy_check_finds_a_broken_config(compose, edit):
    old, new = edit
    conf = real_conf()
    assert old in conf
    assert check_proxy(compose, conf.replace(old, new)) != []


def test_a_metrics_route_in_front_of_the_deny_is_found(compose):
    """nginx picks an exact location before any regex: this one would publish /metrics."""
    conf = real_conf().replace(
        "location /webhooks/ {",
        "location = /metrics { proxy_pass http://ingest:8000; }\n    location /webhooks/ {",
    )
    problems = check_proxy(compose, conf)
    assert "proxy: /metrics is public" in problems


@pytest.mark.parametrize(
    "edit",
    [
        ("USER 10001:10001", "USER root"),
        ("USER 10001:10001", "USER upartners"),
        ('ENTRYPOINT ["upartners"]', 'ENTRYPOINT ["python", "-m", "services.cli"]'),
        ("COPY fakes ./fakes\n", ""),
        ("COPY pyproject.toml README.md ./", "COPY pyproject.toml ./"),
    ],
    ids=lambda edit: edit[1] or "a package left out",
)
def test_the_dockerfile_check_finds_a_broken_dockerfile(edit):
    old, new = edit
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert old in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert check_dockerfile(text.replace(old, new), pyproject) != []


def test_interpolation_takes_the_defaults():
    assert interpolate({"a": ["x${A:-1}y", "${B-2}", "$$HOME", "${C}"]}) == {
        "a": ["x1y", "2", "$HOME", ""]
    }
    assert variables_without_default(["${A:-1}", "${C}", "$D", "$$E"]) == ["${C}", "$D"]
