-- The read side: what a chat page and its live stream show.
create table messages (
  chat_id  text not null,
  version  bigint not null,
  event_id uuid not null unique,
  sender   text not null,
  content  text not null,
  sent_at  timestamptz not null,
  primary key (chat_id, version)
);

-- One row per chat, for "recently active chats" without scanning messages.
create table chats (
  chat_id      text primary key,
  version      bigint not null,
  last_sender  text not null,
  last_sent_at timestamptz not null
);

create index chats_by_activity on chats (last_sent_at desc);

create table projector_checkpoints (
  name       text primary key,
  last_txid  xid8 not null default '0',
  last_gp    bigint not null default 0,
  updated_at timestamptz not null default now()
);
