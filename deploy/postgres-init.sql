-- One database per service (the inventory's is POSTGRES_DB).
CREATE DATABASE scheduler OWNER refstd;
CREATE DATABASE notifier OWNER refstd;
