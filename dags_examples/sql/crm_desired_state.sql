-- The desired state of every conversation the CRM manages: one row per conversation.
-- tags and assignee_ids are arrays in PostgreSQL (text[], int[]) or '|'-separated text in SQLite;
-- a NULL cell leaves that field of that conversation as agents set it.
SELECT conversation_id, status, tags, assignee_ids, team_id
FROM crm_conversation_state
