"""py-spy on a running replica: a flame graph, its raw stacks, and where the time goes.

``bench.kv --profile`` records the raftkv leader with py-spy (a sampling profiler
that reads the process's memory from outside, so the replica runs unchanged)
while a workload runs.  py-spy writes one format per recording, so it records
twice in a row under the same steady load: an SVG flame graph to look at, then
the raw collapsed stacks (one ``frame;frame;... count`` line per distinct stack,
the format of Brendan Gregg's FlameGraph tools), which :func:`summarize` reads.

It samples with ``--nonblocking``: without it py-spy stops the replica for every
sample, which cost a 64-client put workload about 23% of its throughput here
(1,594 ops/s without py-spy, 1,240 with, 1,573 nonblocking), and a slowed
leader batches differently from the one measured.  A sample read while the
thread runs can be torn; in a few thousand samples that does not move a share.

py-spy is a bench-only dependency: the ``bench`` extra of setup.cfg pins it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = ("py-spy not found: install the bench extra (pip install -e '.[bench]'), "
                "which pins it, or pip install py-spy")
RATE = 100           # samples per second (py-spy's default)
EXIT_GRACE = 30.0    # seconds py-spy may take past --duration to attach and write its file
# A frame of py-spy's raw output: "function (file:line)"; with --threads the root frame
# names the thread: "thread (26132): Thread-1 (_autoTickThread)" (native id, Python name).
_FRAME = re.compile(r"^(?P<function>.*) \((?P<where>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^(?:thread|process) \(")
# Leaves that wait for work; _recv_exactly is raftkv.protocol's blocking read of a socket.
_WAITS = frozenset({"wait", "wait_for", "select", "poll", "sleep", "acquire", "accept", "recv",
                    "recv_into", "_recv_exactly"})


def py_spy_binary() -> str | None:
    """py-spy next to this interpreter (a venv that is not activated), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "py-spy"
    if beside.is_file():
        return str(beside)
    return shutil.which("py-spy")


class ProfileError(RuntimeError):
    """py-spy could not record (not permitted to read the process, or it died)."""


def record(binary: str, pid: int, output: Path, duration: float, fmt: str, *,
           nonblocking: bool = True) -> None:
    """``py-spy record`` of ``pid`` for ``duration`` seconds into ``output`` (``fmt``:
    flamegraph, raw or speedscope), thread by thread; ``nonblocking=False`` stops the
    process for each sample (py-spy's default: no torn stacks, a slower process)."""
    argv = [binary, "record", "--pid", str(pid), "--duration", f"{max(1, round(duration))}",
            "--rate", str(RATE), "--threads", "--format", fmt, "--output", str(output),
            *(["--nonblocking"] if nonblocking else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + EXIT_GRACE,
                          check=False)
    if done.returncode != 0 or not output.is_file():
        raise ProfileError(f"{' '.join(argv)} failed (exit {done.returncode}):\n"
                           f"{done.stderr.strip()[-2000:]}")


def parse_collapsed(text: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw output: samples per stack, root first."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def function_of(frame: str) -> str:
    """A frame without its line number: ``send (raftkv/node/journal.py)``."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({match['where']})"


def is_wait(function: str) -> bool:
    """A leaf that waits for work: a condition, a select or poll, a sleep, a blocking read.  py-spy counts
    such a thread as running when it cannot tell (it does not know every wait), so they
    are shown apart.  A journal's fsync is not one: the thread waits for the disk there."""
    name = function.split(" (", 1)[0]
    return name.rsplit(".", 1)[-1] in _WAITS


@dataclass(frozen=True)
class Share:
    name: str
    samples: int
    fraction: float  # of the samples it is a share of (said where it is shown)


@dataclass(frozen=True)
class ThreadTime:
    name: str
    samples: int
    waiting: int              # of which in a wait (:func:`is_wait`)
    busy: list[Share]         # top functions by own time, waits left out; of this thread's


@dataclass(frozen=True)
class Summary:
    samples: int
    waiting: int
    threads: list[ThreadTime]  # py-spy's --threads root frame; most samples first
    busy: list[Share]          # top functions by own time over all threads, waits left out


def summarize(stacks: Counter[tuple[str, ...]], top: int = 12, per_thread: int = 6) -> Summary:
    """Where the samples fall: per thread, and the functions that were running (the leaf
    frame: own time), with waits for work counted apart."""
    own: dict[str, Counter[str]] = {}
    for stack, count in stacks.items():
        frames = list(stack)
        thread = frames.pop(0) if frames and _THREAD.match(frames[0]) else "(all threads)"
        if frames:
            own.setdefault(thread, Counter())[function_of(frames[-1])] += count

    def busy(counter: Counter[str], n: int, of: int) -> list[Share]:
        running = Counter({f: c for f, c in counter.items() if not is_wait(f)})
        return [Share(f, c, c / of if of else 0.0) for f, c in running.most_common(n)]

    everything: Counter[str] = sum(own.values(), Counter())
    total = sum(everything.values())
    threads = [ThreadTime(name, sum(c.values()), sum(n for f, n in c.items() if is_wait(f)),
                          busy(c, per_thread, sum(c.values())))
               for name, c in sorted(own.items(), key=lambda kv: -sum(kv[1].values()))]
    return Summary(total, sum(t.waiting for t in threads), threads, busy(everything, top, total))


def render(summary: Summary, title: str) -> str:
    """The summary as markdown, for the README to quote."""
    busy = summary.samples - summary.waiting
    lines = [f"# {title}", "",
             f"{summary.samples:,} thread samples at {RATE} per second (py-spy leaves out most "
             f"threads idle in a system call); {summary.waiting:,} of them in a wait for work "
             f"(a condition, select, poll, sleep or a blocking read), {busy:,} running or in another system "
             "call (an fsync, a send).", "",
             "| thread | samples | waiting for work | running | top functions by own time "
             "(share of the thread's samples) |", "|---|--:|--:|--:|---|"]
    for t in summary.threads:
        top = "; ".join(f"`{s.name}` {s.fraction:.0%}" for s in t.busy)
        lines.append(f"| {t.name} | {t.samples:,} | {t.waiting:,} | {t.samples - t.waiting:,} "
                     f"| {top} |")
    lines += ["", "Top functions by own time, all threads, waits for work left out "
              "(share of all samples):", "", "| function (file) | samples | share |",
              "|---|--:|--:|"]
    lines += [f"| `{s.name}` | {s.samples:,} | {s.fraction:.1%} |" for s in summary.busy]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Recorded:
    flamegraph: Path
    raw: Path
    summary: Path
    text: str     # the summary's markdown


def profile(binary: str, pid: int, artifacts: Path, name: str, seconds: float,
            title: str) -> Recorded:
    """Record ``pid`` into ``artifacts``: ``<name>.svg`` for ``seconds``, then
    ``<name>.txt`` (raw stacks) for ``seconds`` more, and ``<name>-summary.md``."""
    artifacts.mkdir(parents=True, exist_ok=True)
    svg, raw, md = (artifacts / f"{name}{suffix}" for suffix in (".svg", ".txt", "-summary.md"))
    record(binary, pid, svg, seconds, "flamegraph")
    record(binary, pid, raw, seconds, "raw")
    text = render(summarize(parse_collapsed(raw.read_text(errors="replace"))), title)
    md.write_text(text)
    return Recorded(svg, raw, md, text)
