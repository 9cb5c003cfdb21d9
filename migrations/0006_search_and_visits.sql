-- What only a log can do: a second projection (search), time travel, and
-- "new since your last visit".

-- Search: one row per visible message, kept by the "search" projection
-- (edits re-index, retractions delete). 'simple' is language-neutral: no
-- stemming or stop words, so names and text in any language are found as
-- written. "<" is read as a space: PostgreSQL's parser would take "<b>" or
-- "<script>" for HTML tags and leave them out, and people type text, not
-- markup (search() reads the query and the headline's text the same way).
create table search_index (
  chat_id    text not null,
  message_id bigint not null,
  sender     text not null,
  content    text not null,
  sent_at    timestamptz not null,
  document   tsvector generated always as (to_tsvector('simple', translate(sender || ' ' || content, '<', ' '))) stored,
  primary key (chat_id, message_id)
);
create index search_index_document on search_index using gin (document);

-- Time travel finds a chat's messages as of a version without scanning the
-- stream: its MessageSent events by version.
create index events_sent_by_stream on events (stream_id, stream_version) where event_type = 'MessageSent';

-- Per person and chat, the last chat version the person has seen (from the
-- pages they loaded and what their stream delivered), and when.
create table visits (
  person_id    text not null,
  chat_id      text not null,
  seen_version bigint not null,
  visited_at   timestamptz not null default now(),
  primary key (person_id, chat_id)
);
create index visits_by_person on visits (person_id, visited_at desc);
