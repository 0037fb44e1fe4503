-- Write one actor's state, upgraded to a newer state version, in place as a new version
-- (``supervise migrate``), without stopping workers: only while nobody holds the lease and
-- the actor is still as the migrating reader saw it (no step, restart or rollback since).
-- KEYS[1] meta  KEYS[2] history
-- ARGV[1] fence "token|version|state_version" as read (absent fields as "")
-- ARGV[2] upgraded state json   ARGV[3] its state version   ARGV[4] history length to keep
-- Returns {'upgraded', version} | {'busy'} (a lease is held: a worker steps it, and its
-- commit writes the upgrade) | {'changed'} (read it again) | {'missing'}
local meta, hist = KEYS[1], KEYS[2]
local err = check_types(meta, 'hash', hist, 'list')
if err then return err end
local m = redis.call('HMGET', meta, 'type', 'token', 'version', 'state_version', 'lease_until')
err = check_int(m[2], 'token') or check_int(m[3], 'version') or check_int(m[4], 'state_version')
  or check_int(m[5], 'lease_until')
if err then return err end
if not m[1] then return {'missing'} end
if m[5] then return {'busy'} end
if (m[2] or '') .. '|' .. (m[3] or '') .. '|' .. (m[4] or '') ~= ARGV[1] then
  return {'changed'}
end
local now = now_ms()
local version = redis.call('HINCRBY', meta, 'version', 1)
redis.call('HSET', meta, 'state', ARGV[2], 'state_version', ARGV[3])
local keep = tonumber(ARGV[4])
if keep > 0 then
  redis.call('LPUSH', hist, '{"version":' .. version .. ',"at":' .. now .. ',"migrated_from":'
    .. (m[4] or '1') .. ',"state_version":' .. ARGV[3] .. ',"state":' .. ARGV[2] .. '}')
  redis.call('LTRIM', hist, 0, keep - 1)
end
bump_rev(meta)
return {'upgraded', version}
