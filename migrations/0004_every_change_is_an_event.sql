-- Every change is an event: a chat's version is its change number, not a
-- message count. Messages now change in place (edits, retractions,
-- reactions); events keep their shapes (old MessageSent rows have no
-- authorId and are read as written by no one). Nothing here rewrites events.

-- Idempotency is per person: the same command id from two people is two
-- commands. Events from before people had ids count as the person ''.
create unique index events_command_id_by_person
  on events (stream_id, (coalesce(metadata ->> 'personId', '')), (metadata ->> 'commandId'))
  where metadata ? 'commandId';
drop index events_command_id;

-- What a rule needs about one message (who wrote it, is it retracted) is read
-- from the log, by index: the message's MessageSent is at its own version,
-- every later change names it in data.messageId.
create index events_by_message
  on events (stream_id, ((data ->> 'messageId')::bigint), stream_version)
  where data ? 'messageId';

-- The read model. A message's id is the chat version it was sent at.
alter table messages rename column version to message_id;
alter table messages alter column content drop not null;
alter table messages
  add column author_id       text,
  add column edited_at       timestamptz,
  add column retracted_at    timestamptz,
  -- {emoji: {personId: name}}: who reacted with what, for counts and "mine".
  add column reactions       jsonb not null default '{}',
  -- The chat version of the message's latest change: what its HTML is cached by.
  add column changed_version bigint;
update messages set changed_version = message_id;
alter table messages alter column changed_version set not null;

-- One row per chat version: which message it changed. The live stream sends
-- one frame per version, carrying that message as it is now.
create table chat_changes (
  chat_id    text   not null,
  version    bigint not null,
  message_id bigint not null,
  primary key (chat_id, version)
);
insert into chat_changes (chat_id, version, message_id) select chat_id, message_id, message_id from messages;

-- Until now every version was a message, so the count is the version.
alter table chats add column message_count bigint not null default 0;
update chats set message_count = version;
