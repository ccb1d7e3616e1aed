"""The events file on a filesystem that fills up: whole lines, every event exactly once.

Issue 16, item 4. A real limit: the writer runs in a child process under RLIMIT_FSIZE with
SIGXFSZ ignored, so a write past the limit stops part-way and then fails with EFBIG, as it
would with ENOSPC on a full disk. The child delivers 20 events in batches of three, retrying
a failed batch as the dispatcher does, through two fill / free cycles and a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_sinks import make_events

EVENTS = 20

CHILD = """
import asyncio, errno, json, resource, signal, sys
from pathlib import Path
from tests.test_sinks import make_events
from walletwatch.sinks import FileSink

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
path = Path(sys.argv[1])
events = make_events(0, int(sys.argv[2]))
line = len(events[0].to_json()) + 1
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

def fill(lines):  # the disk has room for ``lines`` more lines
    size = path.stat().st_size if path.exists() else 0
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + int(lines * line), hard))

def free():
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

async def main():
    errors = []
    sink = FileSink(path)
    batches = [events[i : i + 3] for i in range(0, len(events), 3)]
    fill(7.5)  # the third batch fits only in part
    for n, batch in enumerate(batches):
        if n == 4:
            sink = FileSink(path)  # a restart while the disk is full
        if n == 5:
            fill(1.5)
        for attempt in range(10):
            try:
                await sink.deliver(batch)
                break
            except OSError as err:
                errors.append(errno.errorcode[err.errno])
                if attempt == 2:
                    free()  # space comes back after three failures
        else:
            raise AssertionError("never delivered")
    print(json.dumps(errors))

asyncio.run(main())
"""


class TestFullDisk:
    def test_every_event_once_as_a_whole_line_across_fill_and_free(self, tmp_path: Path) -> None:
        """20 events through two fill / free cycles: 20 parseable lines, each event once."""
        path = tmp_path / "events.jsonl"
        root = Path(__file__).resolve().parents[2]
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(EVENTS)],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert child.returncode == 0, child.stderr
        errors = json.loads(child.stdout.splitlines()[-1])
        assert errors == ["EFBIG"] * 6  # the limit was real: three failures in each cycle
        data = path.read_bytes()
        assert data.endswith(b"\n")
        lines = data.decode().splitlines()
        assert [json.loads(line) for line in lines] == [e.to_dict() for e in make_events(0, EVENTS)]
