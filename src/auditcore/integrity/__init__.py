"""Tamper evidence: each workspace's events as an RFC 9162 Merkle log in the event store's
database, signed checkpoints in the C2SP signed-note format, proofs, and ``verify``.

One module per job: ``merkle`` (hashing, proofs, their checks), ``leaf`` (what a leaf is),
``note`` (signed notes, keys, checkpoints), ``log`` (the tables), ``follower`` (appends and
signs), ``publish`` (copies beyond the database), ``verify`` (the whole-store check), ``proofs``
and ``export`` (what auditors get), ``service`` (the wiring the facade, CLI and API use),
``commands`` (the CLI), and ``verify_export`` (the standalone offline verifier).
"""
