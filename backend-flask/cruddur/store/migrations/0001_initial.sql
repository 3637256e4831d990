-- The schema of the SQLite store, in PostgreSQL's types: uuid keys, timestamptz times, and an
-- identity `id` that orders rows written in the same microsecond (SQLite's rowid).
CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE users (
    handle text PRIMARY KEY,
    display_name text NOT NULL
);

CREATE TABLE activities (
    uuid uuid PRIMARY KEY,
    id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    handle text NOT NULL REFERENCES users (handle),
    message text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    likes_count integer NOT NULL DEFAULT 0,
    reposts_count integer NOT NULL DEFAULT 0,
    reply_to_activity_uuid uuid REFERENCES activities (uuid)
);
CREATE INDEX activities_by_reply_to ON activities (reply_to_activity_uuid, created_at);
CREATE INDEX activities_by_handle ON activities (handle, created_at);
CREATE INDEX activities_by_created ON activities (created_at);

CREATE TABLE message_groups (
    uuid uuid PRIMARY KEY,
    first_handle text NOT NULL REFERENCES users (handle),
    second_handle text NOT NULL REFERENCES users (handle),
    UNIQUE (first_handle, second_handle)
);

CREATE TABLE messages (
    uuid uuid PRIMARY KEY,
    id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    message_group_uuid uuid NOT NULL REFERENCES message_groups (uuid),
    sender_handle text NOT NULL REFERENCES users (handle),
    message text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX messages_by_group ON messages (message_group_uuid, created_at);
