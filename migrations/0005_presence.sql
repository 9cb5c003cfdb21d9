-- Who is here: ephemeral, never in the event log. UNLOGGED: no WAL, gone
-- after a crash of the server, which is what presence should do anyway.
-- Each app node owns its rows and rewrites a chat's rows in one statement
-- when its people there change (coalesced); a node's heartbeat says its rows
-- are still true, and rows of a node whose heartbeat stopped are ignored.
create unlogged table presence_nodes (
  node_id      text primary key,
  heartbeat_at timestamptz not null default now()
);

create unlogged table presence (
  node_id      text not null,
  chat_id      text not null,
  -- A person's id, or 'anon:<n>' for a reader without a session (counted, never named).
  person_id    text not null,
  name         text,
  -- Open streams of this person on this chat on this node; 0 while only typing.
  streams      integer not null,
  typing_until timestamptz,
  primary key (node_id, chat_id, person_id)
);

create index presence_by_chat on presence (chat_id);
