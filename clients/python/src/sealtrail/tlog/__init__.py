"""Transparency-log primitives for checking Sealtrail's integrity offline, with
no server and no database: RFC 6962 / RFC 9162 Merkle hashing and proof
verification, C2SP signed notes (Ed25519) and C2SP tlog checkpoints."""

from sealtrail.tlog._checkpoint import Checkpoint, format_checkpoint, parse_checkpoint
from sealtrail.tlog._erasure import ERASURE_RECEIPT_HEADER, ErasureStatement, receipt_time
from sealtrail.tlog._export_statement import (
    EXPORT_STATEMENT_HEADER,
    EXPORT_STATEMENT_HEADER_V1,
    ExportStatement,
)
from sealtrail.tlog._merkle import (
    EMPTY_ROOT,
    LeafTree,
    ProofError,
    RangeRoot,
    RangeTree,
    TreeBuilder,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from sealtrail.tlog._note import (
    NewerStatementError,
    NoteError,
    Signer,
    Verifier,
    generate_signer_key,
    newer_sealtrails,
    open_note,
    sign_note,
)
from sealtrail.tlog._removals import (
    RETENTION_ACTION,
    RETENTION_ACTOR,
    STATEMENT_HEADER,
    PurgeStatement,
    RemovalLedger,
    RemovedLeaves,
    purge_key,
)

__all__ = [
    "EMPTY_ROOT",
    "ERASURE_RECEIPT_HEADER",
    "EXPORT_STATEMENT_HEADER",
    "EXPORT_STATEMENT_HEADER_V1",
    "RETENTION_ACTION",
    "RETENTION_ACTOR",
    "STATEMENT_HEADER",
    "Checkpoint",
    "ErasureStatement",
    "ExportStatement",
    "LeafTree",
    "NewerStatementError",
    "NoteError",
    "ProofError",
    "PurgeStatement",
    "RangeRoot",
    "RangeTree",
    "RemovalLedger",
    "RemovedLeaves",
    "Signer",
    "TreeBuilder",
    "Verifier",
    "format_checkpoint",
    "generate_signer_key",
    "leaf_hash",
    "newer_sealtrails",
    "node_hash",
    "open_note",
    "parse_checkpoint",
    "purge_key",
    "receipt_time",
    "root_from_leaves",
    "sign_note",
    "verify_consistency",
    "verify_inclusion",
]
