"""A throwaway PostgreSQL server for tests and benchmarks of a study shared by several workers: `initdb` in a temp dir,
listening on 127.0.0.1 only, trust login, stopped (and its files removed) at the end. Started as the `postgres` user
when run as root, since the server refuses to run as root. Debian's `postgresql` package brings the binaries
(`apt-get install -y postgresql`: .ci/run does it where they are missing)."""

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class NoServer(RuntimeError):
    """No PostgreSQL server can be started here; the message says why."""


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (not on PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def throwaway_server() -> Iterator[Callable[[], str]]:
    """A server for the block; yields `new_database()`, which creates an empty database and returns its SQLAlchemy
    URL (`postgresql://postgres@127.0.0.1:<port>/<name>`). Raises NoServer when none can be started."""
    folder = binaries()
    if folder is None:
        raise NoServer("no PostgreSQL here (initdb not found): apt-get install -y postgresql")
    root = Path(tempfile.mkdtemp(prefix="hydralight-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise NoServer("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)

    data, port, log = root / "data", _free_port(), root / "server.log"
    try:
        made = run(str(folder / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync")
        if made.returncode != 0:
            raise NoServer(f"initdb failed: {made.stderr.strip()[-500:]}")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = run(str(folder / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        if started.returncode != 0:
            tail = log.read_text()[-500:] if log.is_file() else ""
            raise NoServer(f"PostgreSQL did not start: {started.stderr.strip()[-500:]} {tail}")
        count = iter(range(1_000_000))

        def new_database() -> str:
            name = f"study_{next(count)}"
            created = run(str(folder / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name)
            if created.returncode != 0:
                raise RuntimeError(f"createdb {name}: {created.stderr.strip()}")
            return f"postgresql://postgres@127.0.0.1:{port}/{name}"

        try:
            yield new_database
        finally:
            run(str(folder / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
