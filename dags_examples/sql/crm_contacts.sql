-- The customer record: one row per customer the CRM knows, keyed by phone (any spelling; numbers without a
-- country code are read with the DAG's default_region). meta is a JSON object of custom properties (jsonb in
-- PostgreSQL, JSON text in SQLite); lifetime_value becomes the meta.ltv property through the DAG's column_map;
-- tags are text[] in PostgreSQL or '|'-separated text in SQLite; the account owner is an agent's email.
-- A NULL cell leaves that field of that contact as agents set it.
SELECT phone, first_name, last_name, email, meta, lifetime_value, tags, owner_email
FROM crm_contacts
