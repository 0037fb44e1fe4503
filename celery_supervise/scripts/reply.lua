-- Push the answer to an ask, once: a relay repeated (a worker dying before it removed the
-- outbox entry, a worker and a tick relaying together) pushes nothing more. The marker
-- outlives the asker's read of the list (BLPOP empties it), so it is a key of its own; it
-- and the list expire together.
-- KEYS[1] reply list   KEYS[2] marker: "pushed" (same cluster slot as KEYS[1])
-- ARGV[1] reply json   ARGV[2] ttl (s)
-- Returns 1 if pushed, 0 if a reply was already pushed for these keys.
local err = check_types(KEYS[1], 'list', KEYS[2], 'string')
if err then return err end
if not redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
