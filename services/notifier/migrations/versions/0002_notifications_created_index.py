"""index the delivery log's order (newest first)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 16:50:00

"""
from typing import Sequence, Union

from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index("ix_notifications_created", "notifications", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_notifications_created", table_name="notifications")
