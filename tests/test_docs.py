"""The code in the docs runs, as a reader following them would run it.

Each Markdown page (``README.md`` and ``docs/**/*.md``) is read top to bottom, and its
fenced blocks are handled in order, in a fresh folder of the page's own (the reader's
project):

- A block whose first line is a comment naming a file (``# board.py``, ``# config.yaml``,
  ``# pyproject.toml``) *is* that file: it is written into the folder, replacing an earlier
  version (a tutorial step that shows the whole file again).
- Any other ``python`` block that defines test functions (``def test_...``, at the top
  level) is a test module of its own, run by pytest with the page's files (below).
- Any other ``python`` block is a script: it runs there as ``python <block>.py`` and must
  exit with status 0.
- A block right after the HTML comment ``<!-- test: skip -->`` (invisible on GitHub and in
  the built docs; a reason may follow ``skip``) is left alone: a fragment, a signature, or
  code that needs what a test cannot have. Every ``python`` block runs unless marked so.
- A ``console`` block after ``<!-- test: run -->`` is a transcript: each ``$ command`` runs
  in the folder through the shell and must exit with status 0 (or N, after
  ``<!-- test: run status=N -->``), and what it prints (stdout and stderr) must match the
  lines shown under it, ``...`` standing for any text.
- A ``console`` block after ``<!-- test: serve -->`` starts its one ``$ command`` in the
  background (a server, a listener) and waits until it has printed the first line shown;
  the page's later blocks run meanwhile. It is stopped with SIGINT (Ctrl+C) at the end of
  the page, or when a later ``serve`` block starts the same program (the reader stopping a
  server to start it again, perhaps otherwise) or names it (``<!-- test: serve
  stop=triosvc -->``, the reader replacing it), once it has printed the lines shown, in
  that order, among others; it must then exit with status 0. A program that is not
  installed skips the rest of the page (fails it when the environment variable CI is set).
- At the end, the page's Python files that are not tests are imported (those that no test
  or script used must import at least). Then, if the page wrote test files (``test_*.py``)
  and no ``run`` block ran pytest after the last file was written, ``python -m pytest`` runs
  in the folder and must pass. A page that shows no pytest configuration gets one with
  ``trio_mode = true``.

Pages say port 8000 for HTTP and 6379 for Redis. Each page gets free ports instead: in the
environment variables ``PORT`` and ``REDIS_PORT`` (which config files read as
``${PORT:8000}``), and written for ``8000`` and ``6379`` after ``:`` or a space in the
commands and the output they show. ``python`` and ``triosvc`` are those of the interpreter
running this test.

Why extract the code from the pages rather than include tested files into them: the pages
are read on GitHub as much as in the built docs, and GitHub shows no ``{literalinclude}``;
this way what a reader copies is, character for character, what ran.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / "README.md", *(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
)

#: Seconds one command, script or server start may take.
COMMAND_TIMEOUT = 120
#: Seconds a background command may take to print its first line.
SERVE_TIMEOUT = 30
#: Seconds the pytest run of a page may take.
PYTEST_TIMEOUT = 300
#: The ports pages say (HTTP, Redis), and the environment variables that carry the free
#: ports each page runs on instead.
DOC_PORTS = {"8000": "PORT", "6379": "REDIS_PORT"}

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<what>[a-z]+)\b(?P<reason>.*?)-->\s*$")
FILE_NAME = re.compile(r"^#\s*(?P<name>[\w.-]+\.(?:py|yaml|yml|toml|ini|cfg|json|txt))\s*$")
TEST_FUNCTION = re.compile(r"^(async )?def test_", re.MULTILINE)
ASSIGNMENTS = re.compile(r"""((?:\w+=(?:'[^']*'|"[^"]*"|\S+)\s+)*)(.*)""", re.DOTALL)
MARKERS = frozenset({"skip", "run", "serve"})
PYTEST_CONFIGS = ("pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str | None
    options: dict[str, str] = field(default_factory=dict)  # key=value after the marker

    @property
    def status(self) -> int:
        """The exit status a ``run`` block's commands must have."""
        return int(self.options.get("status", 0))

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        first = self.text.split("\n", 1)[0]
        match = FILE_NAME.match(first)
        return match["name"] if match else None


def read_blocks(page: Path) -> list[Block]:
    """The page's fenced blocks, with the marker each follows; ValueError for a stray marker."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    marker: tuple[str, int, dict[str, str]] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = MARKER.match(line)
        if found:
            if found["what"] not in MARKERS:
                raise ValueError(f"{page.name}:{i + 1}: unknown marker {found['what']!r}")
            if marker is not None:
                raise ValueError(f"{page.name}:{marker[1]}: a marker not followed by a block")
            options = dict(re.findall(r"\b(\w+)=(\S+)", found["reason"]))
            marker = (found["what"], i + 1, options)
            i += 1
            continue
        opening = FENCE.match(line)
        if opening is None:
            if line.strip() and marker is not None:
                raise ValueError(f"{page.name}:{marker[1]}: a marker not followed by a block")
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = FENCE.match(lines[i].rstrip())
            if closing and closing["fence"].startswith(fence) and not closing["info"]:
                break
            text = lines[i]
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            i += 1
        language = (opening["info"].split() or [""])[0].lower()
        text = "\n".join(body) + "\n"
        what, options = (marker[0], marker[2]) if marker else (None, {})
        blocks.append(Block(page, i - len(body), language, text, what, options))
        marker = None
        i += 1
    if marker is not None:
        raise ValueError(f"{page.name}:{marker[1]}: a marker not followed by a block")
    return blocks


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected``, where ``...`` stands for any text (lines too)."""
    shown = "\n".join(line.rstrip() for line in expected.strip().splitlines())
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    normalised = "\n".join(line.rstrip() for line in actual.strip().splitlines())
    return re.fullmatch(pattern, normalised, re.DOTALL) is not None


def transcript(block: Block) -> list[tuple[str, str]]:
    """The ``(command, output shown)`` pairs of a console block."""
    pairs: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        elif pairs:
            pairs[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"{block.where}: a transcript starts with '$ command'")
    return [(command, "\n".join(output)) for command, output in pairs]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Background:
    """A command of a ``serve`` block, running; its output is read as it comes."""

    where: str
    command: str
    program: str  # its first word, after any VAR=value assignments
    expected: str  # a pattern for matches(): the lines shown, in order, among others
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    reader: threading.Thread | None = None

    def start(self) -> None:
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                with self.changed:
                    self.lines.append(line)
                    self.changed.notify_all()

    @property
    def output(self) -> str:
        with self.changed:
            return "".join(self.lines)

    def wait_for(self, predicate: str, *, timeout: float) -> bool:
        """Wait until the output so far matches ``predicate`` (a pattern as for matches())."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not matches(predicate, "".join(self.lines)):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    return matches(predicate, "".join(self.lines))
                self.changed.wait(min(left, 0.1))
            return True


class Reader:
    """Follows one page in its own folder."""

    def __init__(self, page: Path, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.ports = {shown: str(free_port()) for shown in DOC_PORTS}
        shims = folder.parent / f"{folder.name}-bin"
        shims.mkdir()
        # A wrapper, not a symlink, so that a virtual environment's python finds its packages.
        (shims / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (shims / "python").chmod(0o755)
        path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]])
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
            "PATH": path,
            **{DOC_PORTS[shown]: port for shown, port in self.ports.items()},
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",  # print() reaches a pipe as it would a terminal
        }
        self.background: list[Background] = []
        self.test_files: set[str] = set()
        self.modules: set[str] = set()  # the python files that are not tests
        self.tested = True  # no test files written yet, or pytest ran after the last one

    def shell(self) -> dict[str, Any]:
        """How the page's commands run: through the shell, in the page's folder and
        environment, without input, their output and errors as one text."""
        return {
            "shell": True,
            "cwd": self.folder,
            "env": self.env,
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.STDOUT,
            "text": True,
        }

    def port_of(self, text: str) -> str:
        for shown, port in self.ports.items():
            text = re.sub(rf"(?<=[: ]){shown}\b", port, text)
        return text

    def follow(self, blocks: list[Block]) -> None:
        try:
            for block in blocks:
                self.handle(block)
            self.finish()
        finally:
            for job in reversed(self.background):
                if job.process.poll() is None:
                    # Ctrl+C first: a supervisor (--workers) passes it on to its workers,
                    # which a SIGKILL to it would leave running.
                    job.process.send_signal(signal.SIGINT)
                    try:
                        job.process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        job.process.kill()
                        job.process.wait()
                if job.reader is not None:
                    job.reader.join(timeout=10)

    def handle(self, block: Block) -> None:
        if block.marker == "skip":
            return
        if block.marker == "run":
            for command, expected in transcript(block):
                self.run(block, command, expected)
            return
        if block.marker == "serve":
            self.serve(block)
            return
        name = block.file_name
        if name is not None:
            (self.folder / name).write_text(block.text, encoding="utf-8")
            if name.startswith("test_") and name.endswith(".py"):
                self.test_files.add(name)
                self.tested = False
            elif name.endswith(".py"):
                self.modules.add(name.removesuffix(".py"))
            elif name in PYTEST_CONFIGS:
                self.tested = not self.test_files
            return
        if block.language in ("python", "py"):
            if TEST_FUNCTION.search(block.text):
                name = f"test_block_{block.line}.py"
                (self.folder / name).write_text(block.text, encoding="utf-8")
                self.test_files.add(name)
                self.tested = False
                return
            script = self.folder / f"_block_{block.line}.py"
            script.write_text(block.text, encoding="utf-8")
            self.run(block, f"python {script.name}", None)

    def run(self, block: Block, command: str, expected: str | None) -> None:
        command = self.port_of(command)
        done = subprocess.run(
            command,
            **self.shell(),
            timeout=PYTEST_TIMEOUT if "pytest" in command else COMMAND_TIMEOUT,
            check=False,
        )
        if done.returncode != block.status:
            pytest.fail(
                f"{block.where}: `{command}` exited with status {done.returncode}:\n{done.stdout}",
                pytrace=False,
            )
        if expected is not None and not matches(self.port_of(expected), done.stdout):
            pytest.fail(
                f"{block.where}: `{command}` printed\n{done.stdout}\nwhere the page shows\n"
                f"{expected}",
                pytrace=False,
            )
        if re.search(r"\bpytest\b", command):
            self.tested = True

    def serve(self, block: Block) -> None:
        [(command, expected)] = transcript(block)
        command, expected = self.port_of(command), self.port_of(expected)
        # exec: the shell becomes the command, so that SIGINT reaches it (after any
        # VAR=value assignments, which exec passes on).
        assignments, rest = ASSIGNMENTS.match(command).groups()  # type: ignore[union-attr]
        program = rest.split()[0]
        if shutil.which(program, path=self.env["PATH"]) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{block.where}: {program} is not installed", pytrace=False)
            pytest.skip(f"{block.where}: {program} is not installed")
        stopped = {program, *block.options.get("stop", "").split(",")}
        for job in [job for job in self.background if job.program in stopped]:
            self.stop(job)  # the reader stops it (Ctrl+C), to start it again or another
        process = subprocess.Popen(f"{assignments}exec {rest}", **self.shell())
        job = Background(block.where, command, program, f"...{expected.strip()}...", process)
        self.background.append(job)
        job.start()
        first = expected.strip().splitlines()[0]
        if not job.wait_for(f"{first}...", timeout=SERVE_TIMEOUT):
            pytest.fail(
                f"{block.where}: `{command}` did not print\n{first}\nbut\n{job.output}",
                pytrace=False,
            )

    def finish(self) -> None:
        if self.modules:  # those no test or script imported: at least they import
            imports = "; ".join(f"import {name}" for name in sorted(self.modules))
            last = Block(self.page, 0, "console", "", "run")
            self.run(last, f'python -c "{imports}"', None)
        if not self.tested:
            if not any((self.folder / name).exists() for name in PYTEST_CONFIGS):
                (self.folder / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
            last = Block(self.page, 0, "console", "", "run")
            self.run(last, "python -m pytest -p no:cacheprovider", None)
        for job in reversed(list(self.background)):
            self.stop(job)

    def stop(self, job: Background) -> None:
        """Ctrl+C, once the job has printed what the page shows (or never will)."""
        job.wait_for(job.expected, timeout=10)
        job.process.send_signal(signal.SIGINT)
        try:
            status = job.process.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{job.where}: still running 2 minutes after Ctrl+C", pytrace=False)
        assert job.reader is not None
        job.reader.join(timeout=10)
        self.background.remove(job)
        if status != 0 or not matches(job.expected, job.output):
            pytest.fail(
                f"{job.where}: `{job.command}` exited with status {status} after printing\n"
                f"{job.output}\nwhere the page shows\n{job.expected.strip('.')}",
                pytrace=False,
            )


def runnable(page: Path) -> bool:
    return any(
        block.marker in ("run", "serve")
        or (block.marker is None and (block.language in ("python", "py") or block.file_name))
        for block in read_blocks(page)
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_markers(page: Path) -> None:
    """Markers are known and each precedes a block; serve and run mark transcripts."""
    for block in read_blocks(page):
        if block.marker in ("run", "serve"):
            assert block.language == "console", f"{block.where}: {block.marker} needs console"
            commands = transcript(block)
            assert commands, f"{block.where}: a transcript without a command"
            if block.marker == "serve":
                assert len(commands) == 1, f"{block.where}: serve one command per block"
                assert commands[0][1].strip(), f"{block.where}: serve shows no output to wait for"


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [p for p in PAGES if runnable(p)], ids=lambda page: str(page.relative_to(ROOT))
)
def test_page(page: Path, tmp_path: Path) -> None:
    """The page's code runs, and its transcripts say what really happens."""
    folder = tmp_path / "project"
    folder.mkdir()
    Reader(page, folder).follow(read_blocks(page))
