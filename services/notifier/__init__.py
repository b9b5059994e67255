"""The notifier service: turns events into notices — email in the recipient's language, signed
webhooks to partner systems — with a full delivery log."""
