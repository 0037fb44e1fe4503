-- Count one actor in its type's census, nothing else (``supervise reindex``): the
-- accounting that wraps this script (_account.lua) does the work; for an actor already
-- counted it changes nothing.
-- KEYS[1] meta, then the census keys (Keyspace.metric_keys)
-- Returns 1 if the actor exists, else 0.
local err = check_type(KEYS[1], 'hash')
if err then return err end
return redis.call('EXISTS', KEYS[1])
