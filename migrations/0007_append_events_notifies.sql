-- The append wakes every node's projectors itself: a NOTIFY on channel
-- `events` (EVENTS_CHANNEL in src/server.ts) inside the appending
-- transaction, delivered when it commits and never for one that rolled
-- back. It used to be a separate `select pg_notify(...)` after each commit:
-- one more round trip and transaction per group commit, which at a few
-- hundred messages a second (small groups) was a quarter of the node's
-- queries. Same signature and behaviour otherwise.
create or replace function append_events(
  stream_ids   text[],
  stream_types text[],
  expected     bigint[],
  counts       bigint[],
  e_stream_ids text[],
  e_versions   bigint[],
  e_event_ids  uuid[],
  e_types      text[],
  e_data       jsonb[],
  e_metadata   jsonb[]
) returns table (moved_stream_id text, current_version bigint)
language plpgsql as $$
begin
  perform pg_advisory_xact_lock(key)
  from (select distinct hashtextextended(id, 0) as key from unnest(stream_ids) as id order by key) as keys;

  return query
    select i.id, coalesce(s.version, 0)
    from unnest(stream_ids, expected) as i(id, at)
    left join streams s on s.stream_id = i.id
    where coalesce(s.version, 0) <> i.at;
  if found then
    return;
  end if;

  update streams s set version = i.at + i.n
  from unnest(stream_ids, expected, counts) as i(id, at, n)
  where i.at > 0 and i.n > 0 and s.stream_id = i.id;

  insert into streams (stream_id, stream_type, version)
  select i.id, i.type, i.n
  from unnest(stream_ids, stream_types, expected, counts) as i(id, type, at, n)
  where i.at = 0 and i.n > 0;

  insert into events (stream_id, stream_version, event_id, event_type, data, metadata)
  select * from unnest(e_stream_ids, e_versions, e_event_ids, e_types, e_data, e_metadata);

  if cardinality(e_stream_ids) > 0 then
    perform pg_notify('events', '');
  end if;
end
$$;
