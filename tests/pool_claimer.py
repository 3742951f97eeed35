"""A claimer process for the contention tests: claim -> finish until the pool is empty.

Run as ``python -m tests.pool_claimer POOL_URL PILOT_ID OUT_FILE``; writes one claimed token
id per line to OUT_FILE. It is a real OS process so claims really race.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gridlrt.config import load_settings
from gridlrt.tokens import PilotInfo, open_pool


def main(pool_url: str, pilot: str, out_file: str) -> None:
    pool = open_pool(load_settings(pool=pool_url))
    who = PilotInfo(pilot=pilot, host="contention-test")
    with Path(out_file).open("w") as out:
        while (token := pool.claim(who)) is not None:
            pool.finish(token.id, pilot, output=pilot)
            out.write(token.id + "\n")
            out.flush()
    pool.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
