"""One PiCaS claimer for ``bench/pool_bench.py``; runs inside the bench's own PiCaS venv.

It uses PiCaS 1.x exactly as its examples do: a :class:`picas.actors.RunActor` subclass over a
:class:`picas.iterators.TaskViewIterator` on the ``todo`` view of the ``Monitor`` design
document, whose ``process_task`` marks the token done with a
:class:`picas.modifiers.BasicTokenModifier`; ``RunActor`` saves it. The iterator's claim is
PiCaS's own (read a random row of the first 100 of ``todo``, GET the document, set ``lock``,
save); nothing here changes it.

Protocol with the bench: print ``ready`` once connected, wait for a line on stdin, run until
the ``todo`` view is empty, write a JSON result (token ids this claimer processed, start and
end times, crashes) to the file named by ``--out``.

    python _picas_worker.py --server URL --db NAME --name NAME --out FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from picas.actors import RunActor
from picas.clients import CouchDB
from picas.iterators import TaskViewIterator
from picas.modifiers import BasicTokenModifier


class SaveConflicts(logging.Handler):
    """Counts RunActor's "conflict while saving task" messages: a done that was not saved."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "while saving task" in record.getMessage():
            self.count += 1


class BenchActor(RunActor):  # type: ignore[misc]
    """Process a token the cheapest way: note its id, set exit code 0, close it."""

    def __init__(self, db: CouchDB, modifier: BasicTokenModifier, view: str = "todo") -> None:
        super().__init__(db, iterator=TaskViewIterator(db, view), view=view)
        self.modifier = modifier
        self.processed: list[str] = []

    def process_task(self, task: Any) -> None:
        self.processed.append(str(task["_id"]))
        task["exit_code"] = 0
        self.modifier.close(task)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    # RunActor logs at INFO on stderr (picas.actors calls logging.basicConfig); count instead
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    conflicts = SaveConflicts()
    root.addHandler(conflicts)

    client = CouchDB(url=args.server, db=args.db)
    actor = BenchActor(client, BasicTokenModifier())
    print("ready", flush=True)
    sys.stdin.readline()

    started, cpu = time.time(), time.process_time()
    crashes: list[str] = []
    error = ""
    while True:
        try:
            actor.run()
            break
        except OSError as exc:  # "Unable to claim task." after 10 conflicts in a row
            crashes.append(str(exc))
            if len(crashes) > 1000:
                error = f"gave up after {len(crashes)} claim failures"
                break
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
    ended, cpu = time.time(), time.process_time() - cpu
    result = {
        "name": args.name,
        "ids": actor.processed,
        "started": started,
        "ended": ended,
        "crashes": len(crashes),
        "lost": conflicts.count,
        "cpu": cpu,
        "error": error,
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
