-- End now the lease of a step whose prefork pool process died: its parent, the worker's
-- main process, saw the death at once (billiard's WorkerLostError). The lease is left
-- exactly as one that ran out (lease_until = now), so what follows is the tick's one
-- lost-lease path (tick.worker_lost: the worker_lost crash, fenced by the token, or the
-- release of a batch that had ended); no status, mailbox or count changes here.
-- Fenced by the owner: only a lease still held by the dead process (lease_owner as
-- claim.lua wrote it, "hostname:pid") is ended -- never one a newer run took (its own
-- owner), nor one already released, crashed or revoked (no lease_until).
-- KEYS[1] meta
-- ARGV[1] the dead process's worker id ("hostname:pid")
-- Returns {'ended', token}      the lease, held under `token`, now counts as expired
--         {'expired', token}    it had already run out (a repeat, or a late report)
--         {'not_held'}          no lease, or another process's
local meta = KEYS[1]
local err = check_type(meta, 'hash')
if err then return err end
local m = redis.call('HMGET', meta, 'lease_owner', 'lease_until', 'token')
err = check_int(m[2], 'lease_until') or check_int(m[3], 'token')
if err then return err end
if not m[2] or m[1] ~= ARGV[1] then return {'not_held'} end
local now = now_ms()
if tonumber(m[2]) <= now then return {'expired', m[3] or '0'} end
redis.call('HSET', meta, 'lease_until', now)
bump_rev(meta)
return {'ended', m[3] or '0'}
