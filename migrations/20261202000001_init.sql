-- Switchboard's system of record. Ids chosen by applications are opaque text; ids Switchboard
-- mints (messages, files, outbox entries) are bigints.

CREATE TABLE users (
    id          text PRIMARY KEY,
    username    text NOT NULL,
    first_name  text,
    last_name   text,
    role        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rooms (
    kind         text NOT NULL,
    id           text NOT NULL,
    parent_kind  text,
    parent_id    text,
    title        text,
    type         text,
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Per-room message sequence: the last seq handed out.
    last_seq     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, id),
    FOREIGN KEY (parent_kind, parent_id) REFERENCES rooms (kind, id),
    CHECK ((parent_kind IS NULL) = (parent_id IS NULL))
);
CREATE INDEX rooms_parent ON rooms (parent_kind, parent_id);

-- Users need not be upserted before they are granted a room: applications own their users.
CREATE TABLE memberships (
    room_kind   text NOT NULL,
    room_id     text NOT NULL,
    user_id     text NOT NULL,
    role        text NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (room_kind, room_id, user_id),
    FOREIGN KEY (room_kind, room_id) REFERENCES rooms (kind, id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE files (
    id          bigserial PRIMARY KEY,
    uploader_id text NOT NULL,
    file_name   text NOT NULL,
    file_size   bigint NOT NULL,
    mime_type   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id           bigserial PRIMARY KEY,
    room_kind    text NOT NULL,
    room_id      text NOT NULL,
    seq          bigint NOT NULL,
    sender_id    text NOT NULL,
    type         text NOT NULL CHECK (type IN ('text', 'image', 'file')),
    content      text NOT NULL,
    file_id      bigint REFERENCES files (id),
    file_name    text,
    file_size    bigint,
    mime_type    text,
    reply_to_id  bigint REFERENCES messages (id),
    client_id    text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    edited_at    timestamptz,
    deleted_at   timestamptz,
    FOREIGN KEY (room_kind, room_id) REFERENCES rooms (kind, id),
    UNIQUE (room_kind, room_id, seq)
);
-- Idempotency: one message per (sender, room, clientId).
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, room_kind, room_id, client_id)
    WHERE client_id IS NOT NULL;
CREATE INDEX messages_room_id ON messages (room_kind, room_id, id);

-- Forward-only read cursors.
CREATE TABLE read_cursors (
    room_kind   text NOT NULL,
    room_id     text NOT NULL,
    user_id     text NOT NULL,
    message_id  bigint NOT NULL REFERENCES messages (id),
    read_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_kind, room_id, user_id)
);

-- Transactional outbox: written with the message, removed once a gateway node has broadcast
-- it. A row still here after a few seconds is redelivered by another node.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    message_id     bigint NOT NULL REFERENCES messages (id),
    event          text NOT NULL CHECK (event IN ('new', 'edited', 'deleted')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    claimed_until  timestamptz
);
CREATE INDEX outbox_created ON outbox (created_at);
