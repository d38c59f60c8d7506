"""C2SP signed notes and checkpoints: the published examples (c2sp.org/signed-note and
golang.org/x/mod/sumdb/note's tests) and what a verifier must refuse."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from auditcore.integrity.note import (
    Checkpoint,
    Note,
    NoteError,
    SignerKey,
    VerifierKey,
    open_checkpoint,
    sign_note,
)

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"  # noqa: E501
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"  # noqa: E501
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"  # noqa: E501


def test_go_sumdb_note_vectors_sign_and_verify() -> None:
    signer = SignerKey.parse(PETER_SKEY)
    assert signer.encode() == PETER_SKEY
    assert signer.verifier().encode() == PETER_VKEY
    assert sign_note(TEXT, signer) == TEXT + "\n" + PETER_SIG
    peter, enoch = VerifierKey.parse(PETER_VKEY), VerifierKey.parse(ENOCH_VKEY)
    note = Note.parse(TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    assert note.text == TEXT
    assert note.verified_by([peter]) == [peter]  # the unknown key's signature is ignored
    assert note.verified_by([peter, enoch]) == [peter, enoch]
    with pytest.raises(NoteError, match="no trusted key"):
        note.verified_by([])


def test_c2sp_signed_note_example() -> None:
    key = VerifierKey.parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    note = Note.parse(
        "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfX"
        "ppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    )
    assert note.verified_by([key]) == [key]


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1] + "x",
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT
        + "\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",  # noqa: E501
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG * 101,
    ],
)
def test_malformed_notes_are_refused(message: str) -> None:
    with pytest.raises(NoteError):
        Note.parse(message).verified_by([VerifierKey.parse(PETER_VKEY)])


def test_a_bad_signature_by_a_known_key_rejects_the_note() -> None:
    tampered = TEXT.replace("answer", "Answer") + "\n" + PETER_SIG
    with pytest.raises(NoteError, match="does not verify"):
        Note.parse(tampered).verified_by([VerifierKey.parse(PETER_VKEY)])


@pytest.mark.parametrize(
    "key",
    [
        PETER_VKEY[:-1],
        PETER_VKEY.replace("c74f20a3", "c74f20a4"),
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_mangled_verifier_keys_are_refused(key: str) -> None:
    with pytest.raises(NoteError):
        VerifierKey.parse(key)


def test_checkpoints_round_trip_and_workspace_keys_are_derived() -> None:
    signer = SignerKey.generate("audit.example.com")
    moment = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    for_acme = signer.for_log("acme")
    checkpoint = Checkpoint("audit.example.com/acme", 20852163, bytes(range(32)), moment)
    note = checkpoint.sign(for_acme)
    assert note.startswith(
        "audit.example.com/acme\n20852163\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
        f"time {int(moment.timestamp())}\n\n— audit.example.com/acme "
    )
    opened, _ = open_checkpoint(note, [signer.verifier().for_log("acme")])
    assert opened == checkpoint
    # Another workspace's key (same key material, other name) does not vouch for it.
    with pytest.raises(NoteError):
        open_checkpoint(note, [signer.verifier().for_log("globex")])
    # Nor does another key with the same name.
    with pytest.raises(NoteError):
        open_checkpoint(note, [SignerKey.generate("audit.example.com").verifier().for_log("acme")])
    assert SignerKey.parse(signer.encode()) == signer


@pytest.mark.parametrize(
    "text",
    [
        "origin\n",
        "origin\n01\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "origin\n-1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "origin\n1\nAAEC\n",
        "origin\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\nextension\n",
        "\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)
