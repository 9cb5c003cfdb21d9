-- A group commit in one round trip, for writers that already know each
-- stream's version (a cached state): lock the streams, check that every one
-- is at the version the events were decided on, append, all inside one
-- autocommit call. When a stream has moved, nothing is written and each moved
-- stream comes back with its current version: the caller reloads, decides
-- again and appends through the transactional path.
--
-- Same order as that path: the advisory locks come first and assign no
-- transaction id; the id is assigned at the first write, after every lock,
-- so within a stream version order stays transaction-id order.
create function append_events(
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
end
$$;
