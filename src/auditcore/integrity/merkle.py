"""RFC 9162 §2.1 Merkle trees: hashing, inclusion and consistency proofs, and their checks.

Hashing (§2.1.1), SHA-256 throughout:

    MTH({})        = SHA-256()
    MTH({d(0)})    = SHA-256(0x00 || d(0))                       (a leaf)
    MTH(D[n])      = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))  (k: largest power of 2 < n)

Proofs are generated as the RFC's recursive definitions say (PATH, §2.1.3.1; PROOF and
SUBPROOF, §2.1.4.1), as lists of leaf ranges whose subtree hashes make up the proof. Any such
range splits into *perfect* subtrees (2^level leaves starting at a multiple of 2^level), and
those are exactly what a log stores: a node ``(level, index)`` is the hash of leaves
``[index << level, (index + 1) << level)`` — immutable once complete, so a stored log never
rewrites a node. Proofs are checked with the RFC's own algorithms (§2.1.3.2, §2.1.4.2), plus
the guards of transparency-dev/merkle (hash sizes; a consistency proof from the empty tree is
meaningless), whose published test vectors the tests run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]
"""``(level, index)``: the perfect subtree of leaves ``[index << level, (index + 1) << level)``."""

Range = tuple[int, int]
"""``[start, end)``: leaves of one subtree named in a proof."""


class ProofError(ValueError):
    """A proof that does not prove what it claims (or is malformed)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The RFC's k for a subtree of n > 1 leaves: the largest power of two smaller than n."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[Node]:
    """The perfect subtrees that tile ``[start, end)``, left to right, largest first where the
    range allows. For the ranges the RFC's definitions produce (and for every ``[0, n)``) the
    sizes strictly decrease, so the range's MTH is their right fold (``fold``)."""
    nodes = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its perfect subtrees' hashes (largest first), or of the empty tree."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes (in memory: for small trees and exports)."""
    tree = CompactRange()
    for leaf in leaf_hashes:
        tree.append(leaf)
    return tree.root()


class CompactRange:
    """A tree of ``size`` leaves held as its perfect subtrees' hashes (at most one per level):
    appending a leaf merges equal-sized neighbours and yields the nodes it completes. This is
    how the log grows without rereading anything, in O(log n) memory."""

    __slots__ = ("peaks", "size")

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        if len(peaks) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} peaks")
        self.size = size
        self.peaks = list(peaks)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the nodes ``(level, index, hash)`` above level 0 that it
        completes, lowest first."""
        completed = []
        merged, level, index = leaf, 0, self.size
        while index & 1:
            merged = node_hash(self.peaks.pop(), merged)
            level, index = level + 1, index >> 1
            completed.append((level, index, merged))
        self.peaks.append(merged)
        self.size += 1
        return completed

    def root(self) -> bytes:
        return fold(self.peaks)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.peaks)


# Proof generation (RFC 9162 §2.1.3.1 and §2.1.4.1), as the ranges whose MTHs form the proof.


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """PATH(index, D[size]): the ranges of the inclusion proof, nearest the leaf first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    path.reverse()
    return path


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """PROOF(old_size, D[new_size]) = SUBPROOF(old_size, D[new_size], true)."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves")
    proof: list[Range] = []
    m, start, end, complete = old_size, 0, new_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append((start + k, end))
            end = start + k
        else:
            proof.append((start, start + k))
            m, start, complete = m - k, start + k, False
    if not complete:
        proof.append((start, end))
    proof.reverse()
    return proof


NodeFetcher = Callable[[Iterable[Node]], dict[Node, bytes]]
"""Looks up stored perfect-subtree hashes (level 0: the leaf hashes)."""


def range_hashes(ranges: Sequence[Range], fetch: NodeFetcher) -> list[bytes]:
    """The MTH of each range, from the stored perfect subtrees (one lookup for them all)."""
    tiles = [perfect_subtrees(start, end) for start, end in ranges]
    wanted = {node for tile in tiles for node in tile}
    found = fetch(wanted)
    missing = wanted - found.keys()
    if missing:
        raise LookupError(f"the log lacks {len(missing)} node(s), e.g. {min(missing)}")
    return [fold([found[node] for node in tile]) for tile in tiles]


def root_at(size: int, fetch: NodeFetcher) -> bytes:
    """The root of the first ``size`` leaves, from stored nodes."""
    return range_hashes([(0, size)], fetch)[0] if size else EMPTY_ROOT


# Proof verification (RFC 9162 §2.1.3.2 and §2.1.4.2).


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ``ProofError`` unless ``proof`` proves leaf hash ``leaf`` at ``index`` in the
    tree of ``size`` leaves whose root is ``root``."""
    _check_hash(leaf, "the leaf hash")
    for item in proof:
        _check_hash(item, "a proof hash")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    if r != root:
        raise ProofError("the inclusion proof leads to another root hash")


def _settled(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """The cases that need no hashing: refused (raises), or equal sizes (True)."""
    if old_size > new_size:
        raise ProofError(f"the old size {old_size} is larger than the new size {new_size}")
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if old_size == new_size:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes but different root hashes")
        return True
    if not proof:
        raise ProofError("the consistency proof is empty")
    return False


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Raise ``ProofError`` unless ``proof`` proves that the tree of ``new_size`` leaves with
    root ``new_root`` extends the tree of ``old_size`` leaves with root ``old_root``."""
    if _settled(old_size, new_size, proof, old_root, new_root):
        return
    _check_hash(old_root, "the old root hash")
    _check_hash(new_root, "the new root hash")
    for item in proof:
        _check_hash(item, "a proof hash")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of 2
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != old_root:
        raise ProofError("the consistency proof does not lead to the old root hash")
    if sr != new_root:
        raise ProofError("the consistency proof does not lead to the new root hash")
