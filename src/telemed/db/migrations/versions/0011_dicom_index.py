"""The DICOM index of telemed.imaging: patients (per sending institution), studies, series, instances.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SeqId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dicom_patient",
        sa.Column("id", SeqId, primary_key=True, autoincrement=True),
        sa.Column("owner_org", sa.String(64), nullable=False, server_default=""),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("fhir_id", sa.String(64), nullable=False),
        sa.Column("patient_name", sa.String(255), nullable=True),
        sa.Column("birth_date", sa.String(8), nullable=True),
        sa.Column("sex", sa.String(16), nullable=True),
        sa.UniqueConstraint("owner_org", "patient_id", name="uq_dicom_patient"),
    )
    op.create_index("ix_dicom_patient_fhir", "dicom_patient", ["fhir_id"])
    op.create_table(
        "dicom_study",
        sa.Column("study_uid", sa.String(64), primary_key=True),
        sa.Column("patient_pk", SeqId, nullable=False),
        sa.Column("fhir_id", sa.String(64), nullable=False),
        sa.Column("owner_org", sa.String(64), nullable=False, server_default=""),
        sa.Column("study_date", sa.String(8), nullable=True),
        sa.Column("study_time", sa.String(16), nullable=True),
        sa.Column("accession_number", sa.String(16), nullable=True),
        sa.Column("study_id", sa.String(16), nullable=True),
        sa.Column("referring_physician", sa.String(255), nullable=True),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("modalities", sa.String(255), nullable=True),
        sa.Column("num_series", sa.Integer, nullable=False),
        sa.Column("num_instances", sa.Integer, nullable=False),
        sa.Column("fhir_stale", sa.Boolean, nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dicom_study_patient", "dicom_study", ["patient_pk"])
    op.create_index("ix_dicom_study_fhir", "dicom_study", ["fhir_id"])
    op.create_index("ix_dicom_study_date", "dicom_study", ["study_date"])
    op.create_index("ix_dicom_study_stale", "dicom_study", ["fhir_stale"])
    op.create_table(
        "dicom_series",
        sa.Column("series_uid", sa.String(64), primary_key=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("series_number", sa.Integer, nullable=True),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("body_part", sa.String(64), nullable=True),
        sa.Column("num_instances", sa.Integer, nullable=False),
    )
    op.create_index("ix_dicom_series_study", "dicom_series", ["study_uid"])
    op.create_table(
        "dicom_instance",
        sa.Column("sop_instance_uid", sa.String(64), primary_key=True),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("instance_number", sa.Integer, nullable=True),
        sa.Column("transfer_syntax", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=True),
        sa.Column("columns", sa.Integer, nullable=True),
        sa.Column("frames", sa.Integer, nullable=True),
        sa.Column("blob_key", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.LargeBinary, nullable=False),
        sa.Column("received", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dicom_instance_series", "dicom_instance", ["series_uid", "instance_number"])
    op.create_index("ix_dicom_instance_study", "dicom_instance", ["study_uid"])


def downgrade() -> None:
    for table in ("dicom_instance", "dicom_series", "dicom_study", "dicom_patient"):
        op.drop_table(table)
