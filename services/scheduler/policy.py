"""The notice policy: one row (id 1) of settings; the contract's defaults until someone saves one."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.scheduler.models import Policy
from services.scheduler.schemas import DEFAULT_POLICY
from shared.timeutil import utcnow

POLICY_ID = 1
#: The version the defaults have before any policy was saved (the first save makes version 2).
DEFAULT_VERSION = 1
LEAD_SETTINGS = ("instrument_lead_days", "equipment_lead_days", "certificate_lead_days")


class StalePolicy(Exception):
    """The policy changed since the caller read it."""

    def __init__(self, current_version: int) -> None:
        super().__init__(f"the policy is at version {current_version}")
        self.current_version = current_version


def _merged(settings: dict | None) -> dict[str, Any]:
    # Settings added after a policy was saved take their defaults.
    policy = copy.deepcopy(DEFAULT_POLICY)
    policy.update({key: value for key, value in (settings or {}).items() if key in DEFAULT_POLICY})
    return policy


def normalise(settings: dict[str, Any]) -> dict[str, Any]:
    """Only the known settings; lead days as distinct integers, largest first (their order has no meaning)."""
    policy = _merged(settings)
    for name in LEAD_SETTINGS:
        policy[name] = sorted({int(day) for day in policy[name]}, reverse=True)
    return policy


def load_policy(session: Session) -> dict[str, Any]:
    """The policy in force: its settings plus ``version``."""
    row = session.get(Policy, POLICY_ID)
    if row is None:
        return {**normalise(DEFAULT_POLICY), "version": DEFAULT_VERSION}
    return {**normalise(row.settings), "version": row.version}


def save_policy(session: Session, settings: dict[str, Any], *,
                expected_version: int | None = None) -> dict[str, Any]:
    """Replace the policy (the caller commits); bumps the version.

    :raises StalePolicy: ``expected_version`` is not the current version, or another writer got in first.
    """
    row = session.get(Policy, POLICY_ID)
    current = row.version if row is not None else DEFAULT_VERSION
    if expected_version is not None and expected_version != current:
        raise StalePolicy(current)
    values = normalise(settings)
    if row is None:
        # A concurrent first save fails on the primary key at flush: the caller answers 409.
        session.add(Policy(id=POLICY_ID, settings=values, version=current + 1, updated_at=utcnow()))
        session.flush()
    else:
        # Conditional on the version read: two concurrent saves cannot both win.
        result = session.execute(
            update(Policy).where(Policy.id == POLICY_ID, Policy.version == current)
            .values(settings=values, version=current + 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise StalePolicy(current)
        session.expire(row)
    return {**values, "version": current + 1}
