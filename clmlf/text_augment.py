"""Swap-delete: the augmented text view of DBCL where a data set has no back-translations (docs/data.md).

Random swap and random deletion of EDA (Wei and Zou, EMNLP 2019), applied together at EDA's recommended strength:
about one word in ten trades places with another and each word is dropped with probability 0.1. Like a
back-translation it keeps most of the words and the sense while changing the surface. It needs no model, word list
or corpus, so it runs offline; EDA's other two operations need WordNet synonyms and are left out.
"""

from __future__ import annotations

import random

# EDA's alpha: the fraction of words swapped, and each word's chance of deletion.
SWAP_DELETE_STRENGTH = 0.1


def swap_and_delete(text: str, generator: random.Random, keep: str | None = None) -> str:
    """`text` split on whitespace, with random pairs of words swapped and then random words deleted.

    Words equal to `keep` (the aspect placeholder) neither move nor go. At least one other word stays, so the view
    is never empty. The words are joined by single spaces.
    """
    words = text.split()
    movable = [position for position, word in enumerate(words) if word != keep]
    if len(movable) >= 2:
        for _ in range(max(1, int(SWAP_DELETE_STRENGTH * len(movable)))):
            first, second = generator.sample(movable, 2)
            words[first], words[second] = words[second], words[first]
    deleted = {position for position in movable if generator.random() < SWAP_DELETE_STRENGTH}
    if movable and len(deleted) == len(movable):
        deleted.discard(generator.choice(movable))
    return " ".join(word for position, word in enumerate(words) if position not in deleted)
