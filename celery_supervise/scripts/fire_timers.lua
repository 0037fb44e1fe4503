-- Move due durable timers into the mailbox, in due order, and wake the actor if needed.
-- KEYS[1] meta  KEYS[2] mailbox  KEYS[3] timers  KEYS[4] named timer specs
-- A timers member starting with '@' is a named timer whose entry waits in KEYS[4]
-- ("<every_ms>\n<id json>\n<rest of header>\n<body>", timers.py); any other member is the
-- entry itself. A one-shot timer fires once and is gone. A periodic one (every_ms > 0)
-- fires with the id "<id>/<its scheduled due ms>" (unique per firing, the same if the
-- script is retried) and is put back at the first point of its grid (due + k * every)
-- after now: counted from its due time, not from now, so it does not drift; periods missed
-- while no tick ran are skipped, not fired in a burst. While the actor is stopped or
-- quarantined a periodic timer moves on without firing, so a halted actor's mailbox does
-- not fill up with one message per period.
-- Returns {woke (0|1), fired, next_due_ms or -1}
local meta, mbox, timers, specs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local err = check_types(meta, 'hash', mbox, 'list', timers, 'zset', specs, 'hash')
if err then return err end
local m = redis.call('HMGET', meta, 'seq', 'status')
err = check_int(m[1], 'seq') or check_status(m[2])
if err then return err end
local halted = m[2] == 'stopped' or m[2] == 'quarantined'
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', timers, '-inf', now, 'WITHSCORES')
-- Read and check every due timer before the first write.
local plan = {}
for j = 1, #due, 2 do
  local member, at = due[j], tonumber(due[j + 1])
  local t = {member = member, at = at, every = 0, entry = member}
  if string.sub(member, 1, 1) == '@' then
    local spec = redis.call('HGET', specs, string.sub(member, 2))
    local every, idj, rest, body
    if spec then
      every, idj, rest, body = string.match(spec, '^(%d+)\n("[^\n]*")\n([^\n]*)\n(.*)$')
    end
    if not every or #every > 15 then
      return corrupt('timer spec of ' .. shown(member) .. ' is not in celery_supervise\'s format')
    end
    t.every, t.name = tonumber(every), string.sub(member, 2)
    if t.every > 0 then
      idj = string.sub(idj, 1, -2) .. '/' .. string.format('%.0f', at) .. '"'
    end
    t.entry = '{"id":' .. idj .. rest .. '\n' .. body
  end
  plan[#plan + 1] = t
end
local fired = 0
for _, t in ipairs(plan) do
  if not (halted and t.every > 0) then
    local s = redis.call('HINCRBY', meta, 'seq', 1)
    redis.call('RPUSH', mbox, s .. ' ' .. now .. ' ' .. t.entry)
    fired = fired + 1
  end
  if t.every > 0 then
    local periods = math.floor((now - t.at) / t.every) + 1
    redis.call('ZADD', timers, t.at + t.every * periods, t.member)
  else
    redis.call('ZREM', timers, t.member)
    if t.name then redis.call('HDEL', specs, t.name) end
  end
end
local woke = 0
local status = redis.call('HGET', meta, 'status')
if fired > 0 and (status == 'idle' or status == 'active')
   and redis.call('HGET', meta, 'sched') ~= '1' then
  redis.call('HSET', meta, 'sched', 1, 'sched_at', now, 'status', 'active')
  woke = 1
end
local nxt = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')
local next_due = -1
if #nxt > 0 then next_due = tonumber(nxt[2]) end
bump_rev(meta)
return {woke, fired, next_due}
