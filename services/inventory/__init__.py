"""The inventory service: standards, equipment, organizations and enterprise instruments."""
