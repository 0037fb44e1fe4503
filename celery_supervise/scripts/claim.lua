-- Take the lease of one actor and read a batch of its mailbox.
-- KEYS[1] meta   KEYS[2] mailbox
-- ARGV[1] worker id   ARGV[2] lease (ms)   ARGV[3] batch size
-- ARGV[4] nonce of this claim: a retry after a lost reply gets its own claim back
-- ARGV[5] the highest state version this worker's code knows (its type's state_version)
-- The new lease is marked 'stepping' = 1: the worker steps the head entry at once (a worker
-- lost now is blamed on it); each commit says whether the next step follows (commit.lua).
-- Returns one of:
--   {'empty'}                 nothing queued; the scheduled marker is cleared
--   {'busy', lease_until}     another worker holds an unexpired lease
--   {'expired'}               a lease expired with nobody committing; the tick crashes it
--   {'halted', status}        backoff / crashed / stopped / quarantined: not runnable now
--   {'too_new', state_version} the stored state was written by newer code: nothing is
--                             written (the actor stays scheduled; the tick's rewake
--                             publishes it again, with backoff, for a newer worker)
--   {'ok', token, version, state|false, attempt_seq, attempts, state_version, entry_1, ...}
local meta, mbox = KEYS[1], KEYS[2]
local err = check_types(meta, 'hash', mbox, 'list')
if err then return err end
local m = redis.call('HMGET', meta, 'status', 'lease_until', 'state', 'version',
                     'attempt_seq', 'attempts', 'type', 'claim_nonce', 'token',
                     'state_version')
err = check_status(m[1]) or check_int(m[2], 'lease_until') or check_int(m[4], 'version')
  or check_int(m[5], 'attempt_seq') or check_int(m[6], 'attempts') or check_int(m[9], 'token')
  or check_int(m[10], 'state_version')
if err then return err end
local status, lease_until = m[1], m[2]
if not m[7] then return {'empty'} end
if status ~= 'idle' and status ~= 'active' then
  redis.call('HSET', meta, 'sched', 0)
  return {'halted', status or 'missing'}
end
local now = now_ms()
local function granted(token)
  local out = {'ok', token, m[4] or '0', m[3] or false, m[5] or '0', m[6] or '0',
               m[10] or '1'}
  local entries = redis.call('LRANGE', mbox, 0, tonumber(ARGV[3]) - 1)
  for i = 1, #entries do out[#out + 1] = entries[i] end
  return out
end
if lease_until then
  if m[8] == ARGV[4] then return granted(tonumber(m[9])) end
  if tonumber(lease_until) > now then return {'busy', lease_until} end
  return {'expired'}
end
if redis.call('LLEN', mbox) == 0 then
  redis.call('HSET', meta, 'sched', 0, 'status', 'idle')
  return {'empty'}
end
if m[3] and ARGV[5] and tonumber(m[10] or '1') > tonumber(ARGV[5]) then return {'too_new', m[10]} end
local token = redis.call('HINCRBY', meta, 'token', 1)
redis.call('HSET', meta, 'lease_until', now + tonumber(ARGV[2]), 'lease_owner', ARGV[1],
           'status', 'active', 'sched', 1, 'rewakes', 0, 'claim_nonce', ARGV[4],
           'stepping', 1)
bump_rev(meta)
return granted(token)
