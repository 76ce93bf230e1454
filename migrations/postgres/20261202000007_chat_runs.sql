-- (PostgreSQL) A reply in a session with an agent is a run of that agent: the run names its
-- session and the reply message it writes; the reply names its run.
ALTER TABLE runs ADD COLUMN session_id TEXT COLLATE "C";
ALTER TABLE runs ADD COLUMN message_id TEXT COLLATE "C";
ALTER TABLE chat_messages ADD COLUMN run_id TEXT COLLATE "C";
