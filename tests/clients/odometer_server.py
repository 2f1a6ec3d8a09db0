"""Starts a real Odometer for a client suite: a fresh data directory, `odometer init` (whose
output gives the organization id and its API key), then `odometer serve` on a free port of
127.0.0.1. Shared by the suites under tests/clients/; `ODO_BIN` names the binary.

With `ODO_SERVER_MODE=1` the server runs in server mode instead: a fresh PostgreSQL catalog
database and ClickHouse event store database on the servers `scripts/servers` runs
(ODOMETER_TEST_POSTGRES_URL, ODOMETER_TEST_CLICKHOUSE_URL), dropped when the server stops."""

import os
import re
import secrets
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field


@dataclass
class Server:
    base_url: str
    api_key: str
    organization_id: str
    data_dir: str
    process: subprocess.Popen
    databases: "ServerDatabases | None" = field(default=None)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.databases is not None:
            self.databases.drop()


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@dataclass
class ServerDatabases:
    """A PostgreSQL database (catalog and event ledger) and a ClickHouse database (events) of
    their own, made for one server."""

    name: str
    postgres_admin: str
    clickhouse_admin: str

    @staticmethod
    def create() -> "ServerDatabases":
        try:
            postgres = os.environ["ODOMETER_TEST_POSTGRES_URL"]
            clickhouse = os.environ["ODOMETER_TEST_CLICKHOUSE_URL"]
        except KeyError as missing:
            raise RuntimeError(
                f"ODO_SERVER_MODE needs {missing.args[0]}: start the servers with "
                "`scripts/servers start` and export what it prints"
            ) from None
        name = "odometer_clients_" + secrets.token_hex(8)
        subprocess.run(["psql", postgres, "-qc", f"CREATE DATABASE {name}"], check=True)
        return ServerDatabases(name, postgres, clickhouse)

    def environment(self) -> dict:
        return {
            "ODOMETER_CATALOG": _with_database(self.postgres_admin, self.name),
            "ODOMETER_EVENTS": _with_database(self.clickhouse_admin, self.name),
        }

    def drop(self):
        parts = urllib.parse.urlsplit(self.clickhouse_admin)
        endpoint = f"http://{parts.hostname}:{parts.port or 8123}/"
        try:
            urllib.request.urlopen(
                urllib.request.Request(endpoint, data=f"DROP DATABASE IF EXISTS {self.name}".encode()),
                timeout=30,
            ).read()
        except OSError as err:
            print(f"could not drop the ClickHouse database {self.name}: {err}")
        subprocess.run(
            ["psql", self.postgres_admin, "-qc", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"],
            check=False,
        )


def start(log_path=None) -> Server:
    binary = os.environ["ODO_BIN"]
    data_dir = tempfile.mkdtemp(prefix="odometer-client-")
    env = dict(os.environ)
    databases = None
    if os.environ.get("ODO_SERVER_MODE") == "1":
        databases = ServerDatabases.create()
        env.update(databases.environment())
    init = subprocess.run(
        [binary, "init", "--data-dir", data_dir, "--name", "client-suite"],
        check=True, capture_output=True, text=True, env=env,
    )
    org = re.search(r"\b(org_[0-9A-Za-z]+)", init.stdout)
    key = re.search(r"\b(odo_[0-9A-Za-z_]+)", init.stdout)
    if not org or not key:
        raise RuntimeError(f"unexpected `odometer init` output: {init.stdout!r}")
    log = open(log_path or os.path.join(data_dir, "server.log"), "w")
    process = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0"],
        stdout=log, stderr=subprocess.PIPE, text=True, env=env,
    )
    base_url = None
    deadline = time.time() + 60
    while time.time() < deadline and base_url is None:
        line = process.stderr.readline()
        if not line:
            if process.poll() is not None:
                raise RuntimeError(f"odometer serve exited with {process.returncode}")
            continue
        log.write(line)
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if found:
            base_url = found.group(1)
    if base_url is None:
        process.kill()
        raise RuntimeError("odometer serve did not report its address within 60 s")
    # Keep draining stderr into the log so the server never blocks on a full pipe.
    import threading

    def drain():
        for rest in process.stderr:
            log.write(rest)
            log.flush()

    threading.Thread(target=drain, daemon=True).start()
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    return Server(base_url, key.group(1), org.group(1), data_dir, process, databases)
