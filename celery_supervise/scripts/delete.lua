-- Delete one actor, all its own keys at once, if it has no work left: stopped or
-- quarantined (its queued messages and timers go with it), or idle with an empty mailbox,
-- no timers and no isolated subtask pending; never while leased or with committed effects
-- not yet relayed (the outbox). Atomic, so a send either lands before (the actor is busy:
-- refused) or after (send.lua creates a fresh actor).
-- KEYS[1] meta  KEYS[2] mailbox  KEYS[3] history  KEYS[4] crashes  KEYS[5] attempts
-- KEYS[6] dead  KEYS[7] outbox  KEYS[8] undelivered  KEYS[9] timers  KEYS[10] isolates
-- KEYS[11] named timers' specs   KEYS[12] tombstone
-- ARGV[1] actor type   ARGV[2] actor key   ARGV[3] dedup window (s): the tombstone's life
-- ARGV[4] "" (an operator's delete) or idle_ttl in ms: then only an idle actor whose last
-- step (or creation) is at least that old
-- The tombstone keeps "<seq> <version> <token>" for the dedup window: a fresh actor of the
-- same name continues all three (send.lua), so the marks the old one left under its
-- prefixes (dedup, relay watermarks at its receivers, requeue marks) never match one of the
-- new actor's, nor does a paused worker's old fencing token.
-- Returns {'deleted'} | {'missing'} | {'busy', why}
local meta, mbox, timers, isolates, outbox = KEYS[1], KEYS[2], KEYS[9], KEYS[10], KEYS[7]
local err = check_types(meta, 'hash', mbox, 'list', outbox, 'list', timers, 'zset',
                        isolates, 'hash', KEYS[11], 'hash', KEYS[12], 'string')
if err then return err end
err = check_owner(meta, ARGV[1], ARGV[2])
if err then return err end
local m = redis.call('HMGET', meta, 'type', 'status', 'lease_until', 'committed_at',
                     'created_at', 'seq', 'version', 'token')
err = check_status(m[2]) or check_int(m[3], 'lease_until') or check_int(m[4], 'committed_at')
  or check_int(m[5], 'created_at') or check_int(m[6], 'seq') or check_int(m[7], 'version')
  or check_int(m[8], 'token')
if err then return err end
if not m[1] then return {'missing'} end
local status = m[2]
if m[3] then return {'busy', 'leased'} end
if redis.call('LLEN', outbox) > 0 then return {'busy', 'outbox'} end
local halted = status == 'stopped' or status == 'quarantined'
if ARGV[4] ~= '' or not halted then
  if status ~= 'idle' then return {'busy', status or 'missing'} end
  if redis.call('LLEN', mbox) > 0 then return {'busy', 'mailbox'} end
  if redis.call('ZCARD', timers) > 0 then return {'busy', 'timers'} end
  if redis.call('EXISTS', isolates) == 1 then return {'busy', 'isolates'} end
end
if ARGV[4] ~= '' then
  local last = tonumber(m[4] or m[5] or '0')
  if last + tonumber(ARGV[4]) > now_ms() then return {'busy', 'recent'} end
end
local seq, version, token = m[6] or '0', m[7] or '0', m[8] or '0'
for i = 1, 11 do redis.call('DEL', KEYS[i]) end
if seq ~= '0' or version ~= '0' or token ~= '0' then
  redis.call('SET', KEYS[12], seq .. ' ' .. version .. ' ' .. token, 'EX', tonumber(ARGV[3]))
end
return {'deleted'}
