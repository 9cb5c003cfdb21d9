-- The write side: an append-only log of events grouped in streams.
-- One row per stream carries its current version, so an append can
-- compare-and-set it instead of scanning the stream.
create table streams (
  stream_id   text primary key,
  stream_type text not null,
  version     bigint not null check (version >= 0)
);

create table events (
  global_position bigint generated always as identity unique,
  -- Assigned at the first write of the transaction. Appends take a
  -- per-stream advisory lock first, so within one stream the version order
  -- equals the transaction-id order; the projector relies on that.
  transaction_id  xid8 not null default pg_current_xact_id(),
  stream_id       text not null references streams (stream_id),
  stream_version  bigint not null check (stream_version >= 1),
  event_id        uuid not null unique,
  event_type      text not null,
  data            jsonb not null,
  metadata        jsonb not null default '{}',
  recorded_at     timestamptz not null default now(),
  primary key (stream_id, stream_version)
);

-- The projector reads "everything committed below the snapshot horizon"
-- in (transaction_id, global_position) order.
create index events_by_tx on events (transaction_id, global_position);

create index events_by_type on events (event_type, global_position);

-- Idempotency must not depend on an in-memory cache: a command id is
-- accepted at most once per stream.
create unique index events_command_id
  on events (stream_id, (metadata ->> 'commandId'))
  where metadata ? 'commandId';

create function events_are_append_only() returns trigger
language plpgsql as $$
begin
  raise exception 'events is append-only: % is not allowed', tg_op
    using errcode = 'restrict_violation';
end
$$;

create trigger events_append_only
  before update or delete on events
  for each row execute function events_are_append_only();

create trigger events_no_truncate
  before truncate on events
  for each statement execute function events_are_append_only();
