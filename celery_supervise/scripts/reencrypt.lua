-- Read, or rewrite, every stored payload of one actor (a key rotation: reencrypt.py opens
-- and seals them again in Python). The write is fenced on a digest of what the read saw:
-- if anything changed in between (a commit, a send, a crash), nothing is written.
-- KEYS[1] meta  KEYS[2] history  KEYS[3] mailbox  KEYS[4] dead  KEYS[5] timers  KEYS[6] outbox
-- KEYS[7] named timers' specs (hash)
-- ARGV[1] "read" | "write"
-- read returns {'missing'} (no such actor) or {'image', digest, state|false, n_hist,
--   n_mbox, n_dead, n_timers, n_outbox, n_specs, hist..., mbox..., dead...,
--   (timer member, score)..., outbox..., (spec name, spec)...}, each list in the order
--   LRANGE / ZRANGE / HGETALL give it
-- write: ARGV[2] the read's digest   ARGV[3] new state ("" if the actor has none)
--   ARGV[4..9] n_hist, n_mbox, n_dead, n_timers, n_outbox, n_specs   then the items as the
--   read gave them (timers and specs as pairs); returns {'written'} | {'changed'}
local meta, hist, mbox, dead, timers, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local specs = KEYS[7]
local err = check_types(meta, 'hash', hist, 'list', mbox, 'list', dead, 'list',
                        timers, 'zset', outbox, 'list', specs, 'hash')
if err then return err end
if redis.call('EXISTS', meta) == 0 then return {'missing'} end
local state = redis.call('HGET', meta, 'state')
local lists = {redis.call('LRANGE', hist, 0, -1), redis.call('LRANGE', mbox, 0, -1),
               redis.call('LRANGE', dead, 0, -1), redis.call('ZRANGE', timers, 0, -1, 'WITHSCORES'),
               redis.call('LRANGE', outbox, 0, -1), redis.call('HGETALL', specs)}
local parts = {state and ('s' .. #state .. ':' .. state) or '-'}
for _, list in ipairs(lists) do
  parts[#parts + 1] = '#' .. #list
  for _, item in ipairs(list) do parts[#parts + 1] = #item .. ':' .. item end
end
local digest = redis.sha1hex(table.concat(parts, '|'))
if ARGV[1] == 'read' then
  local out = {'image', digest, state or false, #lists[1], #lists[2], #lists[3],
               #lists[4] / 2, #lists[5], #lists[6] / 2}
  for _, list in ipairs(lists) do
    for _, item in ipairs(list) do out[#out + 1] = item end
  end
  return out
end
if ARGV[2] ~= digest then return {'changed'} end
if state and ARGV[3] ~= '' then redis.call('HSET', meta, 'state', ARGV[3]) end
local i = 10
for n, key in ipairs({hist, mbox, dead}) do
  redis.call('DEL', key)
  for _ = 1, tonumber(ARGV[3 + n]) do
    redis.call('RPUSH', key, ARGV[i]); i = i + 1
  end
end
redis.call('DEL', timers)
for _ = 1, tonumber(ARGV[7]) do
  redis.call('ZADD', timers, ARGV[i + 1], ARGV[i]); i = i + 2
end
redis.call('DEL', outbox)
for _ = 1, tonumber(ARGV[8]) do
  redis.call('RPUSH', outbox, ARGV[i]); i = i + 1
end
redis.call('DEL', specs)
for _ = 1, tonumber(ARGV[9]) do
  redis.call('HSET', specs, ARGV[i], ARGV[i + 1]); i = i + 2
end
bump_rev(meta)
return {'written'}
