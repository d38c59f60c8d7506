"""RFC 9162 Merkle trees: published test vectors, and proofs checked against a Merkle tree
written here independently, straight from the RFC's recursive definitions."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditcore.integrity import merkle

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "transparency_dev_merkle.json").read_text()
)


def _b(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


# An independent Merkle tree: RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1, literally, on slices.


def mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def fetcher(leaves: list[bytes]) -> merkle.NodeFetcher:
    """Stored perfect subtrees, as a log would hold them, from the independent MTH."""
    return lambda nodes: {
        (level, index): mth(leaves[index << level : (index + 1) << level]) for level, index in nodes
    }


def data(n: int) -> list[bytes]:
    return [n.to_bytes(4, "big") + bytes([n % 251]) * (n % 7) for n in range(n)]


# Published vectors.


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda case: case["file"])
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_inclusion(
            case["leafIdx"],
            case["treeSize"],
            _b(case["leafHash"]),
            [_b(item) for item in case["proof"] or []],
            _b(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda case: case["file"])
def test_consistency_vectors(case: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_consistency(
            case["size1"],
            case["size2"],
            [_b(item) for item in case["proof"] or []],
            _b(case["root1"]),
            _b(case["root2"]),
        )

    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            check()
    else:
        check()


def test_rfc6962_reference_tree_roots() -> None:
    """The reference tree of RFC 6962's test data (transparency-dev/merkle testonly)."""
    inputs = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f"]  # fmt: skip
    roots = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
             "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
             "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
             "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
             "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
             "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]  # fmt: skip
    tree = merkle.CompactRange()
    assert tree.root().hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    for leaf, root in zip(inputs, roots, strict=True):
        tree.append(merkle.leaf_hash(bytes.fromhex(leaf)))
        assert tree.root().hex() == root


# Properties, against the independent tree.

sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=200, deadline=None)
@given(n=sizes, data_=st.data())
def test_inclusion_proofs_match_the_rfc_and_verify(n: int, data_: st.DataObject) -> None:
    leaves = data(n)
    index = data_.draw(st.integers(0, n - 1))
    expected = path(index, leaves)
    proof = merkle.range_hashes(merkle.inclusion_ranges(index, n), fetcher(leaves))
    assert proof == expected
    root, leaf = mth(leaves), merkle.leaf_hash(leaves[index])
    assert merkle.root_at(n, fetcher(leaves)) == root
    merkle.verify_inclusion(index, n, leaf, proof, root)

    # Any change to what is claimed fails.
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, n, merkle.leaf_hash(leaves[index] + b"x"), proof, root)
    if proof:
        broken = list(proof)
        at = data_.draw(st.integers(0, len(proof) - 1))
        broken[at] = bytes([broken[at][0] ^ 1]) + broken[at][1:]
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(index, n, leaf, broken, root)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(index, n, leaf, proof[:-1], root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, n, leaf, [*proof, root], root)
    other = data_.draw(st.integers(0, n - 1))
    if leaves[other] != leaves[index]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(other, n, leaf, proof, root)


@settings(max_examples=200, deadline=None)
@given(n=sizes, data_=st.data())
def test_consistency_proofs_match_the_rfc_and_verify(n: int, data_: st.DataObject) -> None:
    leaves = data(n)
    m = data_.draw(st.integers(1, n))
    expected = subproof(m, leaves, True)
    proof = merkle.range_hashes(merkle.consistency_ranges(m, n), fetcher(leaves))
    assert proof == expected
    old, new = mth(leaves[:m]), mth(leaves)
    merkle.verify_consistency(m, n, proof, old, new)
    if m < n:
        # A different past (one old leaf changed) is not consistent with this tree.
        rewritten = [*leaves[: m - 1], leaves[m - 1] + b"!"]
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(m, n, proof, mth(rewritten), new)
        broken = list(proof)
        at = data_.draw(st.integers(0, len(proof) - 1))
        broken[at] = bytes([broken[at][0] ^ 0x80]) + broken[at][1:]
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(m, n, broken, old, new)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(m, n, proof[:-1], old, new)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 600))
def test_compact_range_grows_the_same_tree_and_yields_every_perfect_node(n: int) -> None:
    leaves = data(n)
    tree = merkle.CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    for leaf in leaves:
        for level, index, hashed in tree.append(merkle.leaf_hash(leaf)):
            nodes[(level, index)] = hashed
    assert tree.root() == mth(leaves)
    # Exactly the complete perfect subtrees above the leaves, each with the right hash.
    expected = {
        (level, index) for level in range(1, n.bit_length() + 1) for index in range(n >> level)
    }
    assert set(nodes) == expected
    for (level, index), hashed in nodes.items():
        assert hashed == mth(leaves[index << level : (index + 1) << level])
    # A tree restored from its peaks grows on identically.
    restored = merkle.CompactRange(n, [fetcher(leaves)([peak])[peak] for peak in
                                       merkle.perfect_subtrees(0, n)])  # fmt: skip
    extra = merkle.leaf_hash(b"next")
    tree.append(extra)
    restored.append(extra)
    assert restored.root() == tree.root() == mth([*leaves, b"next"])
