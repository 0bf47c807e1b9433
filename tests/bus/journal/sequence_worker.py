"""Child process for the sequence race test: records sequences 1..N of one key in a shuffled order."""

from __future__ import annotations

import random
import sys

from bus.journal import Journal
from bus.ordering import SequenceGuard


def main() -> None:
    url, scope, key, count, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    journal = Journal(url)
    guard = SequenceGuard(journal)
    order = list(range(1, count + 1))
    random.Random(seed).shuffle(order)
    for seq in order:
        guard.applied_many([(scope, key, seq)])
    journal.close()


if __name__ == "__main__":
    main()
