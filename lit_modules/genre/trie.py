"""A prefix tree over token-id sequences, built with sorts instead of a Python loop.

GENRE constrains beam search with a trie of every KB title's tokens (each ending with
the end-of-sequence id): at each step only the tokens that extend the generated prefix
towards some title are allowed. The reference code (facebookresearch/GENRE,
``genre/trie.py``) inserts title by title into nested dicts; here the distinct sequences
are sorted once and the trie is read off the sorted order, so that 1 million titles take
seconds (vectorised numpy), and the nodes are stored in flat arrays:

- node 0 is the root; nodes are numbered in pre-order (the sorted sequences' order);
- ``child_ptr[n] : child_ptr[n + 1]`` indexes node ``n``'s children in ``child_token``
  (ascending) and ``child_node``.

Unlike the reference trie, a sequence inserted twice counts once in ``len(trie)``.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import chain
from typing import Iterable, Sequence

import numpy as np

PAD = -1  # fills the sorted matrix after a sequence's end (never a token id)


class Trie:
    """``Trie(sequences)``; ``trie.get(prefix)`` -> the token ids that may follow ``prefix``
    (``[]`` when ``prefix`` is a complete sequence with no continuation or is not a prefix
    of any sequence); ``len(trie)`` -> the number of distinct sequences."""

    def __init__(self, sequences: Iterable[Sequence[int]]):
        seqs = sorted(set(map(tuple, sequences)))
        if any(len(s) == 0 for s in seqs):
            raise ValueError("Trie: every sequence needs at least one token; got an empty sequence")
        self._len = len(seqs)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
        if flat.size and flat.min() < 0:
            raise ValueError(f"Trie: token ids must be >= 0; got {int(flat.min())}")
        self.max_length = int(lengths.max()) if len(seqs) else 0
        n = len(seqs)
        # M: [N, Lmax], row i = sorted sequence i, padded with PAD (sorts before every token,
        # like a shorter tuple before its extensions)
        M = np.full((n, max(self.max_length, 1)), PAD, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n else np.zeros(0, np.int64)
        rows = np.repeat(np.arange(n), lengths)
        M[rows, np.arange(flat.size) - np.repeat(starts, lengths)] = flat
        # lcp[i]: length of the common prefix of sequences i-1 and i (they differ somewhere)
        lcp = np.zeros(n, dtype=np.int64)
        if n > 1:
            lcp[1:] = np.argmax(M[1:] != M[:-1], axis=1)
        # sequence i adds the nodes for its prefixes of length lcp[i]+1 .. len[i] (pre-order)
        new = lengths - lcp
        node_row = np.repeat(np.arange(n), new)
        first = np.concatenate([[0], np.cumsum(new)[:-1]]) if n else np.zeros(0, np.int64)
        node_depth = lcp[node_row] + np.arange(node_row.size) - np.repeat(first, new)  # 0-based token position
        node_token = M[node_row, node_depth]
        ids = np.arange(node_row.size) + 1  # node ids; 0 is the root
        parent = ids - 1  # within a sequence's run of new nodes, the previous one
        opens = node_depth == lcp[node_row]  # first new node of its sequence: parent made by an earlier one
        parent[opens & (node_depth == 0)] = 0
        for d in range(1, self.max_length):
            at = np.flatnonzero(opens & (node_depth == d))
            if at.size:
                above = ids[node_depth == d - 1]  # ascending
                parent[at] = above[np.searchsorted(above, ids[at]) - 1]  # last node one level up, earlier
        order = np.argsort(parent, kind="stable")  # children grouped by parent, ascending tokens within
        self.child_token = node_token[order].astype(np.int32)
        self.child_node = ids[order].astype(np.int32)
        self.child_ptr = np.zeros(ids.size + 2, dtype=np.int64)
        np.cumsum(np.bincount(parent, minlength=ids.size + 1), out=self.child_ptr[1:])
        self.is_end = np.zeros(ids.size + 1, dtype=bool)  # a node where a sequence ends
        self.is_end[ids[np.cumsum(new) - 1]] = True
        # the same arrays as Python lists: bisect on a list is ~10x faster than numpy on small slices
        self._tok, self._node_of, self._ptr = self.child_token.tolist(), self.child_node.tolist(), self.child_ptr.tolist()

    def _node(self, prefix: Sequence[int]) -> int:
        """The node of ``prefix``, or -1 when no sequence starts with it."""
        node, tok, ptr = 0, self._tok, self._ptr
        for t in prefix:
            hi = ptr[node + 1]
            j = bisect_left(tok, t, ptr[node], hi)
            if j == hi or tok[j] != t:
                return -1
            node = self._node_of[j]
        return node

    def get(self, prefix: Sequence[int]) -> list[int]:
        """Token ids that extend ``prefix`` towards some sequence (ascending)."""
        node = self._node(prefix)
        if node < 0:
            return []
        return self._tok[self._ptr[node] : self._ptr[node + 1]]

    def __contains__(self, sequence: Sequence[int]) -> bool:
        node = self._node(sequence)
        return node >= 0 and bool(self.is_end[node])

    def __len__(self) -> int:
        return self._len

    @property
    def num_nodes(self) -> int:
        return len(self.is_end) - 1

    @property
    def nbytes(self) -> int:
        """Memory of the trie's arrays (what a deployment would hold)."""
        return sum(a.nbytes for a in (self.child_token, self.child_node, self.child_ptr, self.is_end))
