"""Child process for the stale-sequence race test: tries sequences 1..N for one key, prints those it applied."""

from __future__ import annotations

import sys

from bus.journal import Journal


def main() -> None:
    url, scope, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    journal = Journal(url)
    applied = [seq for seq in range(1, count + 1) if journal.check_and_set_sequence(scope, key, seq)]
    journal.close()
    sys.stdout.write(" ".join(map(str, applied)) + "\n")


if __name__ == "__main__":
    main()
