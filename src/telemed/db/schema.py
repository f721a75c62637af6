"""Tables of the FHIR store (SQLAlchemy Core). Alembic migrations under ``migrations/`` create them.

One row per resource in ``resource`` (the current version, kept after delete with ``deleted``) and
one row per version in ``resource_history``; ``seq`` orders history system-wide and gives paging a
stable cursor. JSON is JSONB on PostgreSQL and JSON text on SQLite.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")
SeqId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER PRIMARY KEY

resource = Table(
    "resource",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("has_blobs", Boolean, nullable=False, default=False),
    Column("content", Json, nullable=True),
    # The institution whose user created the resource: its staff may see it (access rules).
    Column("owner_org", String(64), nullable=True),
    Index("ix_resource_type_updated", "resource_type", "last_updated"),
    Index("ix_resource_owner_org", "resource_type", "owner_org"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("seq", SeqId, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("method", String(8), nullable=False),
    Column("has_blobs", Boolean, nullable=False, default=False),
    Column("content", Json, nullable=True),
    UniqueConstraint("resource_type", "id", "version_id", name="uq_history_version"),
    Index("ix_history_type_seq", "resource_type", "seq"),
)


def _index_table(name: str, *columns: Column, lookup: tuple[str, ...]) -> Table:
    """One search index table per parameter type (R4 §3.1.1.4): rows extracted on write."""
    return Table(
        name,
        metadata,
        Column("resource_type", String(64), nullable=False),
        Column("resource_id", String(64), nullable=False),
        Column("code", String(64), nullable=False),
        *columns,
        Index(f"ix_{name}_lookup", "resource_type", "code", *lookup),
        Index(f"ix_{name}_owner", "resource_type", "resource_id", "code"),
    )


idx_string = _index_table("idx_string", Column("value", String(255)), Column("exact", String(255)), lookup=("value",))
idx_token = _index_table(
    "idx_token",
    Column("system", String(255)),
    Column("value", String(255)),
    Column("text", String(255)),
    lookup=("value", "system"),
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64)),
    Column("target_id", String(64)),
    Column("url", String(512)),
    lookup=("target_id", "target_type"),
)
idx_date = _index_table(
    "idx_date", Column("low", DateTime(timezone=True)), Column("high", DateTime(timezone=True)), lookup=("low", "high")
)
idx_number = _index_table("idx_number", Column("value", Float), lookup=("value",))
idx_quantity = _index_table(
    "idx_quantity",
    Column("value", Float),
    Column("system", String(255)),
    Column("unit_code", String(64)),
    lookup=("unit_code", "value"),
)
idx_uri = _index_table("idx_uri", Column("value", String(512)), lookup=("value",))
idx_composite = _index_table(
    "idx_composite",
    Column("c1_system", String(255)),
    Column("c1_value", String(255)),
    Column("c2_system", String(255)),
    Column("c2_value", String(255)),
    Column("c2_low", Float),
    Column("c2_high", Float),
    lookup=("c1_value", "c2_value"),
)

INDEX_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "composite": idx_composite,
}

# Result lists of sorted searches, so their pages stay consistent while data changes.
search_snapshot = Table(
    "search_snapshot",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False, index=True),
    Column("total", Integer, nullable=False),
    Column("ids", Json, nullable=False),
)

# Who may see a patient's records besides the institution that created them (data, not code):
# the managing organization, and an expert or institution assigned by an open request.
access_grant = Table(
    "access_grant",
    metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("grantee_kind", String(16), nullable=False),  # organization | practitioner
    Column("grantee_id", String(64), nullable=False),
    Column("source", String(140), nullable=False),  # e.g. Patient.managingOrganization, ServiceRequest/123
    Column("valid_until", DateTime(timezone=True), nullable=True),  # None: while the source says so
    Index("ix_grant_patient", "patient_id", "grantee_kind", "grantee_id"),
    Index("ix_grant_grantee", "grantee_kind", "grantee_id", "patient_id"),
    Index("ix_grant_source", "source"),
)

account = Table(
    "account",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("display_name", String(255), nullable=False),
    Column("practitioner_id", String(64), nullable=True),
    Column("roles", Json, nullable=False),
    Column("password_hash", String(255), nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("organization_id", String(64), nullable=True),  # the institution the user works for
    Column("password_history", Json, nullable=True),  # previous hashes (no reuse)
    Column("password_changed", DateTime(timezone=True), nullable=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("totp_secret", String(64), nullable=True),
    Column("totp_enabled", Boolean, nullable=False, default=False),
    Column("recovery_codes", Json, nullable=True),  # hashes of unused one-time recovery codes
    Column("tokens_valid_after", DateTime(timezone=True), nullable=True),  # "log out everywhere"
    Column("patient_id", String(64), nullable=True),  # a patient-role account's own Patient (migration 0014)
)

# Access tokens withdrawn before they expire (logout, revocation).
revoked_token = Table(
    "revoked_token",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires", DateTime(timezone=True), nullable=False, index=True),
)

# Background jobs (bulk export, reindex, notifications): durable, so a restart resumes them.
job = Table(
    "job",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | done | failed | cancelled
    Column("owner", String(255), nullable=True),  # the user who asked for it
    Column("params", Json, nullable=False),
    Column("progress", Float, nullable=False, default=0.0),
    Column("message", String(1024), nullable=True),
    Column("result", Json, nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    Column("heartbeat", DateTime(timezone=True), nullable=True),
    Column("worker", String(128), nullable=True),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),  # claims so far
    Column("not_before", DateTime(timezone=True), nullable=True),  # a retry waits until then
    Index("ix_job_status_created", "status", "created"),
)

# Subscription notifications matched at write time, in the writing transaction (the outbox).
subscription_outbox = Table(
    "subscription_outbox",
    metadata,
    Column("seq", SeqId, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", DateTime(timezone=True), nullable=False),
    Column("last_error", String(1024), nullable=True),
    Index("ix_outbox_due", "status", "next_attempt"),
)

# The audit trail: append-only (triggers reject UPDATE/DELETE), hash-chained by the sealer.
audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", SeqId, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("recorded", DateTime(timezone=True), nullable=False),
    Column("username", String(64), nullable=False),
    Column("organization", String(64), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("action", String(1), nullable=False),  # C R U D E (R4 AuditEvent.action)
    Column("interaction", String(40), nullable=False),
    Column("outcome", String(2), nullable=False),  # 0 success, 4 minor failure, 8 serious failure
    Column("break_glass", String(512), nullable=True),
    Column("content", Json, nullable=False),  # the FHIR AuditEvent
    Column("content_hash", String(64), nullable=False),
    Index("ix_audit_recorded", "recorded"),
    Index("ix_audit_user", "username", "recorded"),
    Index("ix_audit_patient", "patient", "recorded"),
    Index("ix_audit_org", "organization", "recorded"),
)

audit_seal = Table(
    "audit_seal",
    metadata,
    Column("seq", SeqId, primary_key=True),  # audit_event.seq
    Column("chain_hash", String(64), nullable=False),  # sha256(previous chain_hash | seq | content_hash)
    Column("sealed", DateTime(timezone=True), nullable=False),
)

# OAuth 2.0 clients of the FHIR API (SMART App Launch apps, hospital system integrations).
oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("secret_hash", String(255), nullable=True),  # Argon2; NULL for a public client (PKCE only)
    Column("redirect_uris", Json, nullable=False),
    Column("grant_types", Json, nullable=False),
    Column("scopes", Json, nullable=False),  # the scopes the client may be granted
    Column("roles", Json, nullable=False),  # roles of its client_credentials tokens
    Column("organization_id", String(64), nullable=True),  # the hospital of a system client
    Column("active", Boolean, nullable=False, default=True),
    Column("created", DateTime(timezone=True), nullable=False),
)

# Authorization codes: single use (the exchange deletes the row), short-lived, stored as a hash.
oauth_code = Table(
    "oauth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),  # sha256 hex of the code
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", String(2048), nullable=False),
    Column("code_challenge", String(128), nullable=False),  # S256
    Column("username", String(64), nullable=False),
    Column("scopes", Json, nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("patient_id", String(64), nullable=True),  # the SMART launch's patient context (0014)
    Column("nonce", String(512), nullable=True),  # OpenID Connect nonce, echoed in the id_token (0014)
    Index("ix_oauth_code_expires", "expires"),
)

# Per-user signing keys of clinical reports (Ed25519). Never deleted: a retired key still verifies
# what it signed. The private half is sealed with a key derived from the server secret.
signing_key = Table(
    "signing_key",
    metadata,
    Column("kid", String(64), primary_key=True),  # RFC 7638 JWK thumbprint of the public key
    Column("username", String(64), nullable=False),
    Column("public_key", String(64), nullable=False),  # raw 32 bytes, base64url (JWK "x")
    Column("private_key_encrypted", String(255), nullable=False),  # base64url(nonce | AES-GCM ciphertext)
    Column("created", DateTime(timezone=True), nullable=False),
    Column("retired", DateTime(timezone=True), nullable=True),
    Index("ix_signing_key_username", "username"),
    # At most one key in use per user, so two first signatures at once cannot create two.
    Index(
        "ux_signing_key_active",
        "username",
        unique=True,
        sqlite_where=text("retired IS NULL"),
        postgresql_where=text("retired IS NULL"),
    ),
)

# The DICOM index (telemed.imaging): what C-FIND and QIDO-RS match on, one row per patient (per
# sending institution), study, series and instance. The instance bytes, exactly as received, are in
# the blob store under ``blob_key``; ``metadata`` is the instance's DICOM JSON (PS3.18 F.2) without
# bulk data, so a series' /metadata is a concatenation of rows. Access follows the study's FHIR
# ImagingStudy (``fhir_id``): whoever may read it may read the images.
dicom_patient = Table(
    "dicom_patient",
    metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("owner_org", String(64), nullable=False, server_default=""),  # the sending institution
    Column("patient_id", String(64), nullable=False),  # (0010,0020) Patient ID
    Column("fhir_id", String(64), nullable=False),  # the FHIR Patient it was matched to or created as
    Column("patient_name", String(255), nullable=True),
    Column("birth_date", String(8), nullable=True),
    Column("sex", String(16), nullable=True),
    UniqueConstraint("owner_org", "patient_id", name="uq_dicom_patient"),
    Index("ix_dicom_patient_fhir", "fhir_id"),
)

dicom_study = Table(
    "dicom_study",
    metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("patient_pk", SeqId, nullable=False),  # dicom_patient.id
    Column("fhir_id", String(64), nullable=False),  # the ImagingStudy
    Column("owner_org", String(64), nullable=False, server_default=""),
    Column("study_date", String(8), nullable=True),
    Column("study_time", String(16), nullable=True),
    Column("accession_number", String(16), nullable=True),
    Column("study_id", String(16), nullable=True),
    Column("referring_physician", String(255), nullable=True),
    Column("description", String(255), nullable=True),
    Column("modalities", String(255), nullable=True),  # backslash-separated, as ModalitiesInStudy
    Column("num_series", Integer, nullable=False, default=0),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("fhir_stale", Boolean, nullable=False, default=False),  # the ImagingStudy lags behind the index
    Column("updated", DateTime(timezone=True), nullable=False),
    Index("ix_dicom_study_patient", "patient_pk"),
    Index("ix_dicom_study_fhir", "fhir_id"),
    Index("ix_dicom_study_date", "study_date"),
    Index("ix_dicom_study_stale", "fhir_stale"),
)

dicom_series = Table(
    "dicom_series",
    metadata,
    Column("series_uid", String(64), primary_key=True),
    Column("study_uid", String(64), nullable=False),
    Column("modality", String(16), nullable=True),
    Column("series_number", Integer, nullable=True),
    Column("description", String(255), nullable=True),
    Column("body_part", String(64), nullable=True),
    Column("num_instances", Integer, nullable=False, default=0),
    Index("ix_dicom_series_study", "study_uid"),
)

dicom_instance = Table(
    "dicom_instance",
    metadata,
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("series_uid", String(64), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer, nullable=True),
    Column("transfer_syntax", String(64), nullable=False),
    Column("rows", Integer, nullable=True),
    Column("columns", Integer, nullable=True),
    Column("frames", Integer, nullable=True),
    Column("blob_key", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("metadata", LargeBinary, nullable=False),  # DICOM JSON (UTF-8), bulk data as BulkDataURI
    Column("received", DateTime(timezone=True), nullable=False),
    Index("ix_dicom_instance_series", "series_uid", "instance_number"),
    Index("ix_dicom_instance_study", "study_uid"),
)

# Invitations of external experts to one consultation (telemed.consultation.invitation): security
# data, not clinical data (who is on the team is in FHIR). Only hashes are kept: the link's token
# as SHA-256, the one-time code as HMAC-SHA256 under the server secret, bound to the row's id.
invitation = Table(
    "invitation",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("consultation_id", String(64), nullable=False),
    Column("practitioner_id", String(64), nullable=False),  # the external expert's Practitioner
    Column("code_hash", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),  # single use: set by the redemption
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),  # codes tried
    Column("created_by", String(64), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_invitation_consultation", "consultation_id"),
)

# Access-token signing keys (RS256, telemed.identity.keys): shared by every instance, published as a
# JWK Set. A retired key signs nothing but stays published until ``publish_until``. The private
# half is sealed with a key derived from the server secret.
token_key = Table(
    "token_key",
    metadata,
    Column("kid", String(64), primary_key=True),  # RFC 7638 JWK thumbprint of the public key
    Column("algorithm", String(16), nullable=False),
    Column("public_key", Text, nullable=False),  # PEM (SubjectPublicKeyInfo)
    Column("private_key_encrypted", Text, nullable=False),  # base64url(nonce | AES-GCM(PKCS#8 DER))
    Column("created", DateTime(timezone=True), nullable=False),
    Column("retired", DateTime(timezone=True), nullable=True),
    Column("publish_until", DateTime(timezone=True), nullable=True),
    Column("longest_expiry", DateTime(timezone=True), nullable=True),  # of a token outliving the usual TTL
)

# OAuth refresh tokens (telemed.identity.refresh): opaque, stored as SHA-256, single use. Each use
# issues the next token of the same ``family``; presenting a used one again revokes the family.
refresh_token = Table(
    "refresh_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("username", String(64), nullable=False),
    Column("scopes", Json, nullable=False),
    Column("issued", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("used", DateTime(timezone=True), nullable=True),
    Column("revoked", DateTime(timezone=True), nullable=True),
    Column("access_jti", String(64), nullable=True),  # the access token issued with it
    Column("access_expires", DateTime(timezone=True), nullable=True),
    Column("patient_id", String(64), nullable=True),  # the SMART launch's patient context (0014)
    Index("ix_refresh_token_family", "family"),
    Index("ix_refresh_token_username", "username"),
)

# Failed sign-ins per client address (telemed.identity.throttle), shared by every instance: after
# too many in a window the address is refused (429) until ``blocked_until``.
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("address", String(64), primary_key=True),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("blocked_until", DateTime(timezone=True), nullable=True),
    Index("ix_login_throttle_window", "window_start"),
)
