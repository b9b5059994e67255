"""The scheduler service: what falls due and when, the sweeps that turn due dates into notices, and
the booking calendar of each standard."""
