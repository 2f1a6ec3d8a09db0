"""Starts a real Odometer for a client suite: a fresh data directory, `odometer init` (whose
output gives the organization id and its API key), then `odometer serve` on a free port of
127.0.0.1. Shared by the suites under tests/clients/; `ODO_BIN` names the binary."""

import os
import re
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass


@dataclass
class Server:
    base_url: str
    api_key: str
    organization_id: str
    data_dir: str
    process: subprocess.Popen

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(log_path=None) -> Server:
    binary = os.environ["ODO_BIN"]
    data_dir = tempfile.mkdtemp(prefix="odometer-client-")
    init = subprocess.run(
        [binary, "init", "--data-dir", data_dir, "--name", "client-suite"],
        check=True, capture_output=True, text=True,
    )
    org = re.search(r"\b(org_[0-9A-Za-z]+)", init.stdout)
    key = re.search(r"\b(odo_[0-9A-Za-z_]+)", init.stdout)
    if not org or not key:
        raise RuntimeError(f"unexpected `odometer init` output: {init.stdout!r}")
    log = open(log_path or os.path.join(data_dir, "server.log"), "w")
    process = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0"],
        stdout=log, stderr=subprocess.PIPE, text=True,
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
    return Server(base_url, key.group(1), org.group(1), data_dir, process)
