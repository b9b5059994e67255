"""The scheduler's rules as plain functions (no Flask, no SQLAlchemy), unit-tested without a database.

- :mod:`.notices`: days left, due states, lead-time crossing, overdue repeats, notice keys, and the
  grouping of noticed items into one event per recipient.
- :mod:`.bookings`: conflicts, recovery time, availability, who may book, status transitions and the
  reasons a standard cannot be booked.
"""
