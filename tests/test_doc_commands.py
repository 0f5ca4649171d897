"""Every command the README, docs/*.md and the demo print for a user works as printed.

The commands are read from the documents themselves — fenced ``sh``/``bash``/``console``
blocks (in ``console`` blocks the ``$ `` lines), ``$ `` lines in other fences — and from
what ``make demo`` and ``make tour`` print ("try it" lines, commands in backticks).  They
run, in document order, in a fresh checkout-like folder: the repository's files linked in,
no state (``./blockhub-data`` does not exist yet), the virtual environment on ``PATH`` (the
README says to activate it) and ``BLOCKHUB_PORT`` a free port.  Commands that
serve (``make demo``, ``blockhub serve``) are started, checked and stopped; benchmarks are
started and stopped after a few seconds (a wrong path, import or argument fails at once).

Skipped commands are listed in :data:`SKIP` with the reason; a failure names the document,
the line and the command.  When a document changes, this test reads the new text: nothing
here lists the commands themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from hub.api.server import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"sh", "bash", "shell", "console"}

SKIP: dict[str, str] = {
    r"^make test\b": "the suite this test is part of",
    r"\.\./shared/": "needs the steering repository's shared/ folder, which a clone has not",
    r"pip install .*\[bench\]": "installs the benchmark peers from the package registry",
    r"bench/exchange\.py": "reads the data of ../shared/bench/gen_data.py (skipped above)",
    r"bench/ws\.py": "runs the peer servers of ../shared/bench/bench_ws.py, not in a clone",
    r"^mosquitto_pub\b": "needs the MQTT broker on 127.0.0.1:1883",  # unless it answers
    r"\.example\b": "names an example host (….example) that stands for an agency's own",
    r"\s/srv/": "names an example export folder that stands for an agency's own",
    r"^docker compose\b": "no Docker engine here: tests/test_compose.py checks the file against "
    "the code and tests/test_deploy_init.py runs the init command",
}
SAME_AS: dict[str, str] = {
    # The Makefile's demo recipe is `.venv/bin/blockhub demo`: run once, as `make demo`.
    r"^(\.venv/bin/)?blockhub demo$": "make demo",
}
SERVES = (r"^make demo\b", r"\bblockhub serve\b")
BENCH = r"(^|\s)(\S*python\S*\s+)?bench/\S+\.py\b"
BENCH_WINDOW_S = 6.0


@dataclass
class Command:
    doc: str
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Block:
    doc: str
    line: int
    commands: list[Command] = field(default_factory=list)


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` outside quotes, after a blank)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def extract(path: Path) -> list[Block]:
    """The shell commands of one Markdown document, block by block."""
    doc = str(path.relative_to(ROOT))
    blocks: list[Block] = []
    fence: str | None = None
    current: Block | None = None
    pending: Command | None = None
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.startswith("```"):
            if fence is None:
                fence = raw[3:].strip().split(" ")[0]
                current = Block(doc, n)
            else:
                if current is not None and current.commands:
                    blocks.append(current)
                fence, current, pending = None, None, None
            continue
        if fence is None or current is None:
            continue
        if pending is not None:  # a continuation of the previous line
            pending.text += "\n" + raw
            if not raw.rstrip().endswith("\\"):
                pending.text = _strip_comment(pending.text)
                pending = None
            continue
        stripped = raw.strip()
        if fence in ("sh", "bash", "shell") and stripped and not stripped.startswith("#"):
            text = stripped
        elif stripped.startswith("$ ") and (fence == "console" or fence not in SHELL_FENCES):
            text = stripped[2:]
        else:
            continue
        cmd = Command(doc, n, text)
        current.commands.append(cmd)
        if text.rstrip().endswith("\\"):
            pending = cmd
        else:
            cmd.text = _strip_comment(cmd.text)
    return blocks


def printed_hints(output: str, doc: str) -> list[Command]:
    """Commands in a demo's output: indented lines that are commands (the "try it" part),
    and commands quoted in backticks."""
    cmds: list[Command] = []
    lines = output.splitlines()
    starts = ("export ", "curl ", "mosquitto_pub ", "BLOCKHUB_HOME=", "blockhub ", ".venv/bin/")
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        if lines[i][:1] in (" ", "\t") and text.startswith(starts):
            n = i + 1
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            cmds.append(Command(doc, n, text))
        else:
            for quoted in re.findall(r"`([^`]+)`", lines[i]):
                if re.search(r"(^|[\s/])blockhub\s", quoted):
                    cmds.append(Command(doc, i + 1, quoted))
        i += 1
    return cmds


# --- running -------------------------------------------------------------------------------


@dataclass
class Checkout:
    """A fresh folder that looks like a clone with the environment installed."""

    path: Path
    env: dict[str, str]
    port: int
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def script(self, exports: list[str], text: str) -> list[str]:
        return ["bash", "-c", "set -e\n" + "".join(f"{e}\n" for e in exports) + text]

    def fail(self, cmd: Command, why: str) -> None:
        self.failures.append(f"{cmd.where}: `{cmd.text}` {why}")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkout]:
    work = tmp_path_factory.mktemp("checkout")
    for entry in ROOT.iterdir():
        if entry.name in ("blockhub-data", ".git", ".pytest_cache", ".mypy_cache", "manifests",
                          "exports", ".readme-state", ".pyiceberg.yaml",
                          ".duckdb-ext"):  # fmt: skip
            continue
        (work / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOCKHUB_", "AIRFLOW"))}
    port = free_port()
    env.update(
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(ROOT / ".venv"),
        BLOCKHUB_PORT=str(port),
        COLUMNS="200",
        TZ=os.environ.get("TZ", "UTC"),
    )
    yield Checkout(work, env, port)


def _mqtt_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
    except OSError:
        return False
    return True


def _skip_reason(text: str) -> str | None:
    for pattern, reason in SKIP.items():
        if re.search(pattern, text):
            if pattern.startswith("^mosquitto_pub") and _mqtt_up():
                return None
            return reason
    for pattern, same in SAME_AS.items():
        if re.search(pattern, text):
            return f"the same program as `{same}`, run above"
    return None


class Output:
    """A child's output, read by a thread so the child never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.text += line


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_command(co: Checkout, cmd: Command, exports: list[str]) -> str:
    """Run one command; record a failure (naming the document and line) if it fails.
    Returns what it printed."""
    reason = _skip_reason(cmd.text)
    if reason:
        co.skipped.append(f"{cmd.where}: `{cmd.text}` — {reason}")
        return ""
    co.ran.append(cmd.where)
    argv = co.script(exports, cmd.text)
    serves = any(re.search(p, cmd.text) for p in SERVES)
    bench = re.search(BENCH, cmd.text) is not None
    if not serves and not bench:
        try:
            r = subprocess.run(
                argv, cwd=co.path, env=co.env, capture_output=True, text=True, timeout=600
            )
        except subprocess.TimeoutExpired:
            co.fail(cmd, "did not finish in 600 s")
            return ""
        said = r.stdout + r.stderr
        if r.returncode != 0:
            co.fail(cmd, f"exited {r.returncode}:\n{said[-2000:]}")
        elif "Traceback" in said:
            at = said.index("Traceback")
            co.fail(cmd, f"printed a traceback:\n{said[at : at + 2500]}\n…\n{said[-800:]}")
        elif re.search(r'"ok":\s*false', r.stdout):
            co.fail(cmd, f"answered an error:\n{r.stdout[-2000:]}")
        return r.stdout
    proc = subprocess.Popen(
        argv,
        cwd=co.path,
        env=co.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out = Output(proc)
    try:
        deadline = time.monotonic() + (BENCH_WINDOW_S if bench else 420)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if serves and _healthy(co.port):
                break
            time.sleep(0.5)
        if proc.poll() is not None and proc.returncode != 0:
            co.fail(cmd, f"exited {proc.returncode}:\n{out.text[-2000:]}")
        elif serves and not _healthy(co.port):
            co.fail(cmd, f"did not serve on 127.0.0.1:{co.port}:\n{out.text[-2000:]}")
        elif serves and cmd.text.startswith("make demo"):
            time.sleep(0.5)  # the hints are printed before serving starts
            hints = printed_hints(out.text, f"(output of {cmd.where} `{cmd.text}`)")
            if not any(h.text.startswith("curl ") for h in hints):
                co.fail(cmd, f"printed no commands to try:\n{out.text[-2000:]}")
            run_sequence(co, hints)
    finally:
        _stop(proc)
    return out.text


def run_sequence(co: Checkout, commands: list[Command]) -> None:
    """Commands of one block in order, each with the ``export`` lines before it."""
    exports: list[str] = []
    for cmd in commands:
        printed = run_command(co, cmd, exports)
        if cmd.text.startswith("export "):
            exports.append(cmd.text)
        if cmd.text.startswith("make tour"):
            run_sequence(co, printed_hints(printed, f"(output of {cmd.where} `{cmd.text}`)"))


def test_extraction_reads_fences_prompts_and_continuations(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "```sh\nblockhub a   # note\n# comment\nbench/x.py --a \\\n    --b 1\n```\n"
        "```console\n$ blockhub b 'x # y'\noutput\n```\n```\n$ blockhub c\n```\n"
        "```json\n{}\n```\n",
        encoding="utf-8",
    )
    old_root = globals()["ROOT"]
    globals()["ROOT"] = tmp_path
    try:
        got = [(c.line, c.text) for b in extract(doc) for c in b.commands]
    finally:
        globals()["ROOT"] = old_root
    assert got == [
        (2, "blockhub a"),
        (4, "bench/x.py --a \\\n    --b 1"),
        (8, "blockhub b 'x # y'"),
        (12, "blockhub c"),
    ]
    hints = printed_hints(
        "blockhub demo — state in /x\n  export TOKEN=x\n  see `BLOCKHUB_HOME=/h blockhub runs t`\n",
        "d",
    )
    assert [h.text for h in hints] == ["export TOKEN=x", "BLOCKHUB_HOME=/h blockhub runs t"]


@pytest.mark.timeout(2400)
def test_every_documented_command_works_as_printed(checkout: Checkout) -> None:
    blocks = [b for path in DOCUMENTS for b in extract(path)]
    assert sum(len(b.commands) for b in blocks) > 20, "the documents' commands were not found"
    # Every block of the other documents starts from the state the README leaves (the demo,
    # then one's own data), not from what an earlier block's examples changed (a removed
    # root); the README's own blocks build on each other.
    state, saved = checkout.path / "blockhub-data", checkout.path / ".readme-state"
    for block in blocks:
        if block.doc != "README.md":
            if not saved.exists() and state.exists():
                shutil.copytree(state, saved, symlinks=True)
            if saved.exists():
                shutil.rmtree(state, ignore_errors=True)
                shutil.copytree(saved, state, symlinks=True)
        run_sequence(checkout, block.commands)
    print("\nskipped:\n  " + "\n  ".join(checkout.skipped))
    assert len(checkout.ran) > 20, checkout.ran
    assert not checkout.failures, "commands that do not work as printed:\n\n" + "\n\n".join(
        checkout.failures
    )
