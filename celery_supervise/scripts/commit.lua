-- Commit one step: new state, version + 1, the handled entry removed from the mailbox,
-- the step's effects recorded -- all or nothing, and only for the current lease holder.
-- KEYS[1] meta  KEYS[2] mailbox  KEYS[3] history  KEYS[4] attempts  KEYS[5] outbox
-- KEYS[6] timers  KEYS[7] isolates (pending subtask outcomes)  KEYS[8] named timer specs
-- ARGV[1] fencing token   ARGV[2] seq of the handled entry   ARGV[3] new state json
-- ARGV[4] history entry json (without version; "{...}" gets '"version":N,' spliced in)
-- ARGV[5] history length to keep   ARGV[6] lease (ms)   ARGV[7] "1" if ctx.stop() was called
-- ARGV[8] n outbox effects   ARGV[9] n self messages   ARGV[10] n timers
-- ARGV[11] n isolated subtasks   ARGV[12] "1" if this worker steps the next entry at once
-- (recorded as 'stepping': a worker lost after this commit is blamed on the next entry only
-- if it was about to step it)   ARGV[13] the state version of the new state
-- ARGV[14] the step-time histogram bucket of this step (census.py)   ARGV[15] its seconds
-- then: outbox effect jsons; self message (header, body) pairs; timer (delay_ms, entry)
-- pairs; isolate (id, pending record json) pairs; then the number of named timer changes
-- (absent: none) and for each (name, delay_ms or '' to cancel, spec): a set replaces the
-- pending timer of that name, a cancel of an unknown name does nothing (timers.py)
-- Returns {'ok', version} | {'stale'} (token superseded) | {'expired'} (the lease ran out,
-- even if nobody took it over yet: an expired lease is a lost lease) | {'moved'} (head is
-- not seq)
-- A retry of a commit that was applied but whose reply was lost returns {'ok', version}.
local meta, mbox, hist, attempts, outbox, timers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local isolates, specs = KEYS[7], KEYS[8]
local err = check_types(meta, 'hash', mbox, 'list', hist, 'list', outbox, 'list',
                        timers, 'zset', isolates, 'hash', specs, 'hash')
if err then return err end
local m = redis.call('HMGET', meta, 'token', 'lease_until', 'consumed', 'version', 'seq')
err = check_int(m[2], 'lease_until') or check_int(m[3], 'consumed') or check_int(m[4], 'version')
  or check_int(m[5], 'seq')
if err then return err end
if m[1] ~= ARGV[1] or not m[2] then return {'stale'} end
if m[3] == ARGV[2] then return {'ok', tonumber(m[4])} end
local now = now_ms()
if tonumber(m[2]) <= now then return {'expired'} end
local head = redis.call('LINDEX', mbox, 0)
if not head then return {'moved'} end
local seq = entry_seq(head)
if type(seq) == 'table' then return seq end
if seq ~= tonumber(ARGV[2]) then return {'moved'} end
redis.call('LPOP', mbox)
redis.call('DEL', attempts)
local version = redis.call('HINCRBY', meta, 'version', 1)
redis.call('HSET', meta, 'state', ARGV[3], 'consumed', seq, 'attempts', 0,
           'crashes_in_row', 0, 'committed_at', now, 'lease_until', now + tonumber(ARGV[6]),
           'stepping', ARGV[12], 'state_version', ARGV[13])
local keep = tonumber(ARGV[5])
if keep > 0 then
  redis.call('LPUSH', hist, '{"version":' .. version .. ',"at":' .. now .. ',' .. string.sub(ARGV[4], 2))
  redis.call('LTRIM', hist, 0, keep - 1)
end
local n_out, n_self, n_timer = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local n_iso = tonumber(ARGV[11])
local i = 16
for _ = 1, n_out do
  redis.call('RPUSH', outbox, ARGV[i]); i = i + 1
end
for _ = 1, n_self do
  local s = redis.call('HINCRBY', meta, 'seq', 1)
  redis.call('RPUSH', mbox, s .. ' ' .. now .. ' ' .. ARGV[i] .. '\n' .. ARGV[i + 1]); i = i + 2
end
for _ = 1, n_timer do
  redis.call('ZADD', timers, now + tonumber(ARGV[i]), ARGV[i + 1]); i = i + 2
end
for _ = 1, n_iso do
  redis.call('HSET', isolates, ARGV[i], ARGV[i + 1]); i = i + 2
end
local n_named = tonumber(ARGV[i]) or 0
i = i + 1
for _ = 1, n_named do
  local name, delay = ARGV[i], ARGV[i + 1]
  if delay == '' then
    redis.call('ZREM', timers, '@' .. name)
    redis.call('HDEL', specs, name)
  else
    redis.call('ZADD', timers, now + tonumber(delay), '@' .. name)
    redis.call('HSET', specs, name, ARGV[i + 2])
  end
  i = i + 3
end
if ARGV[7] == '1' then
  redis.call('HSET', meta, 'stop_requested', 1)
end
-- The census (_account.lua): counted here, once: a retried commit returned above.
local stats = KEYS[#KEYS - 6]
redis.call('HINCRBY', stats, 'steps', 1)
redis.call('HINCRBY', stats, 'step:' .. ARGV[14], 1)
redis.call('HINCRBYFLOAT', stats, 'step_sum', ARGV[15])
bump_rev(meta)
return {'ok', version}
