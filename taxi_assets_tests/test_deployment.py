"""The docker-compose stack, proved without a Docker engine.

The static half reads docker-compose.yaml with a YAML loader (variables filled from .env.example,
as `docker compose` fills them from a `.env` copied from it) and checks it against the compose
specification, the Dockerfile, deploy/workspace.yaml, the image's instance (the project's
dagster.yaml followed by deploy/run_launcher.yaml) and the project's workspace.yaml.
`docker compose config` runs too when the compose CLI is installed.

The process half runs the very commands the compose services run (`command:` of code-server,
webserver and daemon, and their healthchecks) as local processes, with the environment compose
gives them, and materializes one partition through the webserver's GraphQL API. What differs, and
nothing else does:
- hosts and ports: each compose service name becomes 127.0.0.1 and each container port a free
  loopback port of its stand-in (the suite's PostgreSQL, a fake-gcs-server, bqemulator, the
  code server); the source release on the internet becomes the suite's loopback HTTP source;
- paths inside the image (DAGSTER_HOME, TAXI_HOME) become temporary folders;
- the run launcher: without a Docker engine runs use Dagster's default launcher (a process per
  run, started by the code server) instead of deploy/run_launcher.yaml's DockerRunLauncher, so
  the instance is the project's dagster.yaml without that file appended.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jsonschema
import psycopg
import pytest
import yaml
from psycopg import sql

from taxi_assets.storage.local_postgres import free_port
from taxi_assets_tests.conftest import PostgresUnderTest
from taxi_assets_tests.dagster_processes import (
    DagsterProcess,
    GraphQLClient,
    loaded_locations,
    start_process,
    wait_for_daemons,
    wait_until,
)
from taxi_assets_tests.pipeline import partition_state

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
DAGSTER_YAML = ROOT / "dagster.yaml"
RUN_LAUNCHER = DEPLOY / "run_launcher.yaml"
# The Dockerfile's recipe for the image's instance config; stack_instance() follows it.
INSTANCE_RECIPE = (
    "(sed '/^run_launcher:/,$d' dagster.yaml; cat deploy/run_launcher.yaml)"
    ' > "$DAGSTER_HOME/dagster.yaml"'
)
BIN = Path(sys.executable).parent

DAGSTER_SERVICES = ("code-server", "webserver", "daemon")
# The real January 2021 sample: 28,401 trips, 589 of them without passengers.
PARTITION = "2021-01-01"
SAMPLE = "yellow_tripdata_2021-01.csv.gz"
LOADED_ROWS = 28_401 - 589
# The month's path into PostgreSQL and into the lake on GCS.
SELECTION = [
    ["raw_yellow_trips"],
    ["cleaned_yellow_trips"],
    ["ny_taxi", "yellow_cab_data"],
    ["yellow_trips_parquet"],
]
LAKE_OBJECT = "nyc_taxi_data/2021-01.parquet"
# Bounds a hang only; nothing asserts how long the run took.
RUN_TIMEOUT = 600.0


# --- reading the files ------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as compose reads a .env file whose comments are on lines of their own."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


class MissingVariable(KeyError):
    pass


_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>.*))?", re.S)


def interpolate(value, variables: dict[str, str]):
    """Compose's variable interpolation (${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}, $$)."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["bare"]:
            return variables.get(match["bare"], "")
        parsed = _BRACED.fullmatch(match["braced"])
        assert parsed, f"unsupported interpolation {match[0]!r}"
        name, op, arg = parsed["name"], parsed["op"], parsed["arg"]
        current = variables.get(name)
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise MissingVariable(f"{name}: {arg}")
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        return current or ""

    return _REFERENCE.sub(substitute, value)


def stack_instance_text() -> str:
    """$DAGSTER_HOME/dagster.yaml in the image, made as INSTANCE_RECIPE makes it."""
    local = DAGSTER_YAML.read_text()
    return local[: local.index("\nrun_launcher:") + 1] + RUN_LAUNCHER.read_text()


def stack_instance() -> dict:
    return yaml.safe_load(stack_instance_text())


def run_launcher_config() -> dict:
    return stack_instance()["run_launcher"]["config"]


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose(variables: dict[str, str] | None = None) -> dict:
    """docker-compose.yaml as compose sees it with `.env` = .env.example (or `variables`)."""
    return interpolate(
        raw_compose(), read_env_file(ENV_EXAMPLE) if variables is None else variables
    )


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command(service: dict) -> list[str]:
    argv = service["command"]
    return shlex.split(argv) if isinstance(argv, str) else [str(a) for a in argv]


def healthcheck(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", f"healthchecks run as exec form so they can run here too: {test}"
    return [str(a) for a in test[1:]]


def flag(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg in names:
            return argv[i + 1]
    return None


@dataclass
class Stage:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    cmd: list[str] | None = None


def dockerfile_stages() -> dict[str, Stage]:
    """The Dockerfile's stages with what each inherits from the stage it starts FROM."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else parts[0]
            parent = stages.get(parts[0])
            stage = Stage(name)
            if parent:
                stage.env, stage.workdir, stage.user = dict(parent.env), parent.workdir, parent.user
            stages[name] = stage
        elif stage is None:
            continue
        elif keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                stage.env[key] = re.sub(r"\$(\w+)", lambda m: stage.env.get(m[1], ""), value)
        elif keyword == "WORKDIR":
            stage.workdir = rest.strip()
        elif keyword == "USER":
            stage.user = rest.strip()
        elif keyword == "COPY" and "--from=" not in rest:  # from the build context
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            stage.copies.append((args[:-1], args[-1]))
        elif keyword == "RUN":
            stage.runs.append(rest)
        elif keyword == "CMD":
            stage.cmd = json.loads(rest)
    return stages


def image_env(service: dict) -> dict[str, str]:
    """What a container of this service has in its environment: the image's ENV, then compose's."""
    return {**dockerfile_stages()[service["build"]["target"]].env, **environment(service)}


def instance_env_references(config) -> set[str]:
    """Every `env: NAME` the Dagster instance config reads."""
    if isinstance(config, dict):
        found = {config["env"]} if set(config) == {"env"} else set()
        return found.union(*(instance_env_references(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(instance_env_references(v) for v in config))
    return set()


def service_addresses(env: dict[str, str], services: dict) -> list[tuple[str, str, int]]:
    """(variable, service, port) for every address in `env` that names a compose service."""
    found = []
    for key, value in env.items():
        if "://" in value:
            url = urllib.parse.urlsplit(value)
            if url.hostname in services:
                found.append((key, url.hostname, url.port))
        elif key.endswith("_HOST") and value in services:
            found.append((key, value, int(env[key[: -len("HOST")] + "PORT"])))
    return found


def listening_port(name: str, service: dict) -> int:
    """The port the service's process listens on, from its own command line."""
    if name == "postgres":
        return 5432  # the image's server, started by its entrypoint with the default port
    return int(flag(command(service), "-p", "--port", "-port"))


# --- the static checks ------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification():
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(raw_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_docker_compose_config_accepts_the_stack(tmp_path):
    docker = shutil.which("docker")
    probe = docker and subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if not probe or probe.returncode != 0:
        pytest.skip(
            "no `docker compose` CLI here (the docker client has no compose plugin), so "
            "only this sub-check is skipped; the file was still parsed, checked against "
            "the compose specification and run as processes by the other tests"
        )
    # Compose prefers the shell's variables to the env file: keep ours out of its way.
    env = {k: v for k, v in os.environ.items() if k not in read_env_file(ENV_EXAMPLE)}
    result = subprocess.run(
        [
            docker,
            "compose",
            "--env-file",
            str(ENV_EXAMPLE),
            "-f",
            str(COMPOSE_FILE),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)["services"]
    ours = compose()["services"]
    for name in DAGSTER_SERVICES:
        assert rendered[name]["command"] == command(ours[name])
        assert rendered[name]["environment"] == environment(ours[name])


def test_workspace_points_at_the_code_server_service():
    services = compose()["services"]
    [entry] = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())["load_from"]
    grpc = entry["grpc_server"]
    code_server = services[grpc["host"]]
    argv = command(code_server)

    assert argv[:3] == ["dagster", "code-server", "start"]
    assert flag(argv, "-h", "--host") == "0.0.0.0", "other containers must reach it"
    assert int(flag(argv, "-p", "--port")) == grpc["port"]
    assert [str(grpc["port"])] == code_server["expose"]
    assert healthcheck(code_server) == [
        "dagster",
        "api",
        "grpc-health-check",
        "-p",
        str(grpc["port"]),
    ]
    # The same code location as `make dev`'s workspace.yaml and pyproject's [tool.dagster].
    [local] = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert flag(argv, "-m", "--module-name") == local["python_module"]["module_name"]
    assert grpc["location_name"] == local["python_module"]["location_name"]
    # The image's default command is the code server's.
    assert dockerfile_stages()[code_server["build"]["target"]].cmd == argv

    app = dockerfile_stages()["app"]
    assert (["deploy"], "./deploy") in app.copies
    for name in ("webserver", "daemon"):
        argv = command(services[name])
        workspace = flag(argv, "-w", "--workspace")
        assert workspace == "deploy/workspace.yaml", f"{name} must load the gRPC workspace"
        assert services[name]["build"] == code_server["build"]
        assert services[name]["image"] == code_server["image"]
        assert "code-server" in services[name]["depends_on"]
    assert command(services["webserver"])[0] == "dagster-webserver"
    assert command(services["daemon"])[:2] == ["dagster-daemon", "run"]
    assert healthcheck(services["daemon"]) == ["dagster-daemon", "liveness-check"]


def test_stack_instance_is_the_projects_plus_the_docker_run_launcher():
    local = yaml.safe_load(DAGSTER_YAML.read_text())
    # The recipe cuts the file from its run_launcher on: that block must be the last.
    assert list(local)[-1] == "run_launcher", "the recipe would cut the settings after it"
    local_launcher = local.pop("run_launcher")
    assert (local_launcher["module"], local_launcher["class"]) == (
        "taxi_assets.run_health",
        "LocalRunLauncher",
    )
    assert set(yaml.safe_load(RUN_LAUNCHER.read_text())) == {"run_launcher"}
    stack = stack_instance()
    launcher = stack.pop("run_launcher")

    assert stack == local
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    # It is the instance every container of the image loads.
    app = dockerfile_stages()["app"]
    assert any(INSTANCE_RECIPE in run for run in app.runs)
    assert (["dagster.yaml"], "./") in app.copies
    assert "DAGSTER_HOME" in app.env


def test_every_setting_the_instance_reads_is_set_where_it_is_read():
    services = compose()["services"]
    stack = stack_instance()
    needed = instance_env_references(stack)
    assert needed >= {"DAGSTER_PG_URL", "TAXI_HOME"}
    for name in DAGSTER_SERVICES:
        env = image_env(services[name])
        missing = {v for v in needed if not env.get(v)}
        assert not missing, f"{name} loads the instance without {missing}"
    # Run containers get the image's ENV plus what the launcher passes on.
    passed = set(stack["run_launcher"]["config"]["env_vars"])
    image = dockerfile_stages()["app"].env
    assert needed <= passed | set(image)


def test_run_containers_get_the_code_servers_settings_network_and_volumes():
    top = compose()
    services = top["services"]
    config = run_launcher_config()
    code_server = services["code-server"]
    code_env = environment(code_server)

    # Runs execute the code server's code, so they need exactly its settings; the daemon (which
    # launches queued runs) and the webserver (which may) must have each one to pass it on.
    assert sorted(config["env_vars"]) == sorted(set(code_env) - {"DAGSTER_CURRENT_IMAGE"})
    for name in ("daemon", "webserver"):
        env = environment(services[name])
        assert {k: env.get(k) for k in config["env_vars"]} == {
            k: code_env[k] for k in config["env_vars"]
        }
    # ... from the code server's own image.
    assert code_env["DAGSTER_CURRENT_IMAGE"] == code_server["image"]
    # On the stack's network, which therefore has a fixed name.
    networks = {spec["name"]: key for key, spec in top["networks"].items()}
    assert config["network"] in networks
    for name in services:
        assert services[name]["networks"] == [networks[config["network"]]], name
    # With the same volumes, mounted where the code server has them.
    volumes = {spec["name"]: key for key, spec in top["volumes"].items()}
    for mount in config["container_kwargs"]["volumes"]:
        volume, path, *mode = mount.split(":")
        assert volume in volumes, f"{volume} is not a compose volume with that fixed name"
        assert ":".join([volumes[volume], path, *mode]) in code_server["volumes"]
    taxi_home = dockerfile_stages()["app"].env["TAXI_HOME"]
    assert f"taxi_assets_home:{taxi_home}" in config["container_kwargs"]["volumes"]
    for name in ("webserver", "daemon"):
        assert f"{volumes['taxi_assets_home']}:{taxi_home}" in services[name]["volumes"]
        # Both talk to the Docker engine: the daemon starts runs, the webserver terminates them.
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[name]["volumes"]
        assert services[name]["group_add"]


def started_before(name: str, services: dict) -> set[str]:
    """The services compose starts before `name`, directly or through other dependencies."""
    found, todo = set(), [name]
    while todo:
        for target in services[todo.pop()].get("depends_on") or {}:
            if target not in found:
                found.add(target)
                todo.append(target)
    return found


def test_every_address_is_a_service_listening_there_and_started_first():
    services = compose()["services"]
    seen = set()
    for name, service in services.items():
        for variable, target, port in service_addresses(environment(service), services):
            seen.add(target)
            assert port == listening_port(target, services[target]), f"{name}: {variable}"
            assert [str(port)] == services[target]["expose"], f"{target} must declare {port}"
            assert target in started_before(name, services), f"{name} needs {target} up first"
    assert seen == {"postgres", "gcs", "bigquery"}
    for name, service in services.items():
        for target, dependency in (service.get("depends_on") or {}).items():
            # Up means healthy wherever the target can tell.
            if "healthcheck" in services[target]:
                assert dependency["condition"] == "service_healthy", f"{name} -> {target}"
            # Optional only for the emulators, which a real-GCP stack does not start.
            assert dependency.get("required", True) or services[target].get("profiles"), target


def test_postgres_holds_one_set_of_credentials():
    services = compose()["services"]
    pg = environment(services["postgres"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in DAGSTER_SERVICES:
        env = environment(services[name])
        assert (env["TAXI_PG_USER"], env["TAXI_PG_PASSWORD"], env["TAXI_PG_DB"]) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )
        url = urllib.parse.urlsplit(env["DAGSTER_PG_URL"])
        assert (url.hostname, url.port) == (env["TAXI_PG_HOST"], int(env["TAXI_PG_PORT"]))
        assert (url.username, url.password, url.path.lstrip("/")) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )
        assert env["TAXI_PROFILE"] == "gcp"
    # Without a .env there is no default password to fall back on.
    blank = {k: v for k, v in read_env_file(ENV_EXAMPLE).items() if k != "TAXI_PG_PASSWORD"}
    with pytest.raises(MissingVariable, match="TAXI_PG_PASSWORD"):
        compose(blank)


def test_only_the_webserver_is_published_and_only_on_loopback():
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"webserver"}
    [mapping] = published["webserver"]
    host_ip, host_port, container_port = mapping.split(":")
    assert host_ip == "127.0.0.1"
    assert container_port == flag(command(services["webserver"]), "-p", "--port")
    assert flag(command(services["webserver"]), "-h", "--host") == "0.0.0.0"
    assert host_port == read_env_file(ENV_EXAMPLE)["DAGSTER_WEBSERVER_PORT"]


def test_image_installs_the_lock_as_a_non_root_user():
    stages = dockerfile_stages()
    app = stages["app"]
    syncs = [run for run in app.runs if "uv sync" in run]
    assert syncs and all("--frozen" in run and "--no-dev" in run for run in syncs)
    assert (["pyproject.toml", "uv.lock"], "./") in app.copies
    for name in ("app", "bqemulator"):
        assert stages[name].user not in ("root", "0", ""), f"stage {name} runs as root"
    # The last stage is what `docker build .` gives: the code location.
    assert list(stages)[-1] == "app"
    bq = compose()["services"]["bigquery"]
    assert bq["build"]["target"] == "bqemulator"


def test_secrets_stay_out_of_git_and_out_of_the_image():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode == 0
    assert ignored, ".env must be git-ignored"
    tracked = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT).returncode
    assert tracked != 0, ".env.example must be committable"
    # The build context is an allow-list of what the Dockerfile copies; .env is never in it.
    patterns = [p for p in DOCKERIGNORE.read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    copied = {
        src.rstrip("/")
        for stage in dockerfile_stages().values()
        for sources, _ in stage.copies
        for src in sources
    }
    assert copied == allowed
    # Every variable the stack requires has a line in .env.example.
    required = set(re.findall(r"\$\{(\w+):?\?", COMPOSE_FILE.read_text()))
    assert required <= set(read_env_file(ENV_EXAMPLE))


# --- the compose commands, as local processes --------------------------------------------------


@dataclass
class LocalStack:
    """Where each compose service's stand-in listens, and how to run a service's commands here."""

    compose: dict
    ports: dict[str, dict[int, int]]  # service -> container port -> loopback port
    source_url: str
    paths: dict[str, Path]  # path inside the image -> temporary folder
    workdir: Path
    log_dir: Path
    database: PostgresUnderTest
    gcs: object  # the GcsEmulator standing in for the `gcs` service
    processes: list[DagsterProcess] = field(default_factory=list)

    @property
    def services(self) -> dict:
        return self.compose["services"]

    def address(self, service: str, port: int) -> tuple[str, int]:
        return "127.0.0.1", self.ports[service][port]

    def env(self, name: str) -> dict[str, str]:
        """The service's container environment, with hosts, ports and image paths localized."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TAXI_", "DAGSTER_", "GOOGLE_", "UV_"))
        }
        image = dockerfile_stages()[self.services[name]["build"]["target"]].env
        for key, value in {**image, **environment(self.services[name])}.items():
            if key == "PATH" or key.startswith("UV_"):
                continue  # the image's own venv and build tool; here the suite's venv is used
            env[key] = str(self.paths.get(value, value))
        for key, value in list(env.items()):
            if key.startswith(("TAXI_", "DAGSTER_", "GOOGLE_")) and "://" in value:
                url = urllib.parse.urlsplit(value)
                if url.hostname in self.services:
                    host, port = self.address(url.hostname, url.port)
                    netloc = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
                    env[key] = url._replace(netloc=f"{netloc}{host}:{port}").geturl()
        for key, value in list(env.items()):
            if key.endswith("_HOST") and value in self.services:
                port_key = key[: -len("HOST")] + "PORT"
                env[key], port = self.address(value, int(env[port_key]))
                env[port_key] = str(port)
        # The release lives on the internet; tests use the same files from a loopback server.
        env["TAXI_SOURCE_URL"] = self.source_url
        env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        for key, value in env.items():
            assert not any(
                value == s or f"//{s}:" in value or f"@{s}:" in value for s in self.services
            ), f"{name}: {key} still names a compose host"
        return env

    def argv(self, name: str, argv: list[str]) -> list[str]:
        """A command of the service, with its listen address and its ports localized."""
        out, args = [], iter(argv)
        for arg in args:
            out.append(arg)
            if arg in ("-h", "--host"):
                next(args)
                out.append("127.0.0.1")
            elif arg in ("-p", "--port"):
                out.append(str(self.ports[name][int(next(args))]))
        for container_port, port in self.ports.get(name, {}).items():
            out = [a.replace(f"127.0.0.1:{container_port}/", f"127.0.0.1:{port}/") for a in out]
        program = shutil.which(out[0], path=self.env(name)["PATH"])
        assert program, f"{out[0]} is not installed in the project's environment"
        return [program, *out[1:]]

    def start(self, name: str) -> DagsterProcess:
        process = start_process(
            name,
            self.argv(name, command(self.services[name])),
            self.env(name),
            self.log_dir,
            cwd=self.workdir,
        )
        self.processes.append(process)
        return process

    def wait_healthy(self, name: str, process: DagsterProcess) -> None:
        """Until the service's compose healthcheck passes, run here as compose would run it."""
        argv, env = self.argv(name, healthcheck(self.services[name])), self.env(name)

        def healthy() -> bool:
            return (
                subprocess.run(
                    argv,
                    env=env,
                    cwd=self.workdir,
                    capture_output=True,
                    stdin=subprocess.DEVNULL,
                    timeout=120,
                ).returncode
                == 0
            )

        # Each probe starts a Python process: poll gently, the server is loading on the same cores.
        wait_until(healthy, f"{name}'s healthcheck", [process], interval=2.0)

    def logs(self) -> str:
        return "\n".join(p.describe() for p in self.processes)


def _stack_database(
    postgres: PostgresUnderTest, user: str, password: str, db: str
) -> PostgresUnderTest:
    """The role and database the postgres image creates from POSTGRES_USER/PASSWORD/DB."""
    with psycopg.connect(postgres.uri, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
        if exists and postgres.server is not None:
            # Only on the suite's own throwaway server: never drop a database we did not make.
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
            exists = None
        if not exists:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(db), sql.Identifier(user)
                )
            )
    return PostgresUnderTest(postgres.host, postgres.port, user, password, db)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory, postgres, _http_server) -> Iterator[LocalStack]:
    """The compose stack's Dagster services as processes, on stand-ins for its other services."""
    from taxi_assets_tests.emulators.bigquery import run_bigquery_emulator
    from taxi_assets_tests.emulators.gcs import running_gcs_emulator

    tmp = tmp_path_factory.mktemp("deployment")
    top = compose()
    services = top["services"]
    settings = environment(services["code-server"])
    database = _stack_database(
        postgres, settings["TAXI_PG_USER"], settings["TAXI_PG_PASSWORD"], settings["TAXI_PG_DB"]
    )
    image = dockerfile_stages()["app"].env
    paths = {image["DAGSTER_HOME"]: tmp / "dagster_home", image["TAXI_HOME"]: tmp / "taxi_home"}
    for path in paths.values():
        path.mkdir()
    # The one allowed difference in the instance: no Docker engine, so the default run launcher.
    shutil.copyfile(DAGSTER_YAML, paths[image["DAGSTER_HOME"]] / "dagster.yaml")

    with ExitStack() as stack:
        gcs = stack.enter_context(
            running_gcs_emulator(tmp / "gcs", bucket=settings["TAXI_GCS_BUCKET"])
        )
        bigquery = stack.enter_context(
            run_bigquery_emulator(
                project=settings["TAXI_BQ_PROJECT"],
                log_dir=tmp_path_factory.mktemp("bqemulator"),
                gcs=gcs,  # as compose's STORAGE_EMULATOR_HOST: load jobs read the lake there
            )
        )
        ports = {
            "postgres": {listening_port("postgres", services["postgres"]): postgres.port},
            "gcs": {listening_port("gcs", services["gcs"]): gcs.port},
            "bigquery": {
                listening_port("bigquery", services["bigquery"]): urllib.parse.urlsplit(
                    bigquery.endpoint
                ).port
            },
            "code-server": {listening_port("code-server", services["code-server"]): free_port()},
            "webserver": {listening_port("webserver", services["webserver"]): free_port()},
        }
        # The image's working directory: deploy/workspace.yaml, pointing at the local code server.
        workdir = tmp / "app"
        (workdir / "deploy").mkdir(parents=True)
        workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
        for entry in workspace["load_from"]:
            grpc = entry["grpc_server"]
            grpc["host"], grpc["port"] = "127.0.0.1", ports[grpc["host"]][grpc["port"]]
        (workdir / "deploy" / "workspace.yaml").write_text(yaml.safe_dump(workspace))

        local = LocalStack(
            top, ports, _http_server.url, paths, workdir, tmp / "logs", database, gcs
        )
        stack.callback(lambda: [p.stop() for p in reversed(local.processes)])

        # In compose's order: the webserver and the daemon both wait for a healthy code server.
        local.wait_healthy("code-server", local.start("code-server"))
        started = {name: local.start(name) for name in ("webserver", "daemon")}
        for name, process in started.items():
            local.wait_healthy(name, process)
        yield local


def _graphql(stack: LocalStack) -> GraphQLClient:
    return GraphQLClient(f"http://127.0.0.1:{stack.ports['webserver'][3000]}/graphql")


ASSET_JOBS = """
query ($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) { assetKey { path } jobNames } }
"""

LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

RUN_STATUS = """
query ($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }
"""

RUN_MESSAGES = """
query ($runId: ID!) { logsForRun(runId: $runId) { __typename
  ... on EventConnection { events { __typename ... on MessageEvent { message } } } } }
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def test_compose_commands_materialize_a_partition(local_stack, http_source):
    graphql = _graphql(local_stack)
    processes = local_stack.processes
    locations = wait_until(lambda: loaded_locations(graphql), "the gRPC code location", processes)
    [grpc] = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())["load_from"]
    assert locations == [grpc["grpc_server"]["location_name"]]
    wait_for_daemons(graphql, processes)
    http_source.publish(PARTITION[:7], SAMPLE)

    keys = [{"path": path} for path in SELECTION]
    nodes = graphql(ASSET_JOBS, {"keys": keys})["assetNodes"]
    assert sorted(n["assetKey"]["path"] for n in nodes) == sorted(SELECTION)
    [job] = set.intersection(
        *({j for j in n["jobNames"] if j.startswith("__ASSET_JOB")} for n in nodes)
    )
    launched = graphql(
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": locations[0],
                    "repositoryName": "__repository__",
                    "jobName": job,
                    "assetSelection": keys,
                },
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PARTITION}]},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    # Queued: the webserver only enqueues; the daemon launches it through the code server.
    assert launched["run"]["status"] == "QUEUED"

    def finished() -> str | None:
        status = graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        return status if status in FINISHED else None

    status = wait_until(finished, f"run {run_id}", processes, timeout=RUN_TIMEOUT, interval=1.0)
    if status != "SUCCESS":
        events = graphql(RUN_MESSAGES, {"runId": run_id})["logsForRun"].get("events", [])
        messages = "\n".join(e.get("message") or "" for e in events)
        pytest.fail(f"run {run_id} ended {status}:\n{messages[-6000:]}\n{local_stack.logs()}")
    count, _, _ = partition_state(local_stack.database, PARTITION)
    assert count == LOADED_ROWS
    assert local_stack.gcs.objects(LAKE_OBJECT).get(LAKE_OBJECT, 0) > 0
    assert any(r.startswith("GET /yellow_tripdata_2021-01") for r in http_source.requests)


def test_stack_instance_loads_with_the_docker_run_launcher(local_stack, monkeypatch, tmp_path):
    """The image's instance, run launcher and all, is valid config over the stack's database."""
    import dagster as dg
    from dagster_docker import DockerRunLauncher

    env = local_stack.env("daemon")
    for key in ("DAGSTER_PG_URL", "TAXI_HOME"):
        monkeypatch.setenv(key, env[key])
    (tmp_path / "dagster.yaml").write_text(stack_instance_text())
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        config = run_launcher_config()
        assert launcher.networks == [config["network"]]
        assert launcher.env_vars == config["env_vars"]
        assert launcher.container_kwargs == config["container_kwargs"]
        # The storage the local stack's daemon writes its heartbeats to.
        assert instance.get_daemon_heartbeats()
    finally:
        instance.dispose()
