"""Infrastructure shared by every refstd service: no domain model lives here."""
