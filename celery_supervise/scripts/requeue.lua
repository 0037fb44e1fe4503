-- Requeue one dead letter after a replay proved it, only if the actor's committed state is
-- the one the replay ran on and the letter is still dead: atomically, so a replay that
-- raced a change (a commit, another requeue of the same letter) requeues nothing.
-- KEYS[1] meta   KEYS[2] mailbox   KEYS[3] dead letters
-- KEYS[4] the letter's requeue mark (ActorKeys.requeued(seq)): shared with
-- Delivery.requeue, so an operator's plain requeue of the same letter and this one
-- append it once between them
-- ARGV[1] the dead letter, exactly as read   ARGV[2] the version the replay ran on ("": any;
-- an operator's plain requeue)
-- ARGV[3] header json of the new entry   ARGV[4] body json   ARGV[5] dedup window (s)
-- Returns {'requeued', woke (0|1), seq} | {'skip', 'changed' | 'gone'}
local meta, mbox, dead, mark = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local err = check_types(meta, 'hash', mbox, 'list', dead, 'list', mark, 'string')
if err then return err end
local m = redis.call('HMGET', meta, 'version', 'seq', 'status')
err = check_int(m[1], 'version') or check_int(m[2], 'seq') or check_status(m[3])
if err then return err end
local marked = redis.call('GET', mark)
if marked and not (string.match(marked, '^%d+$') and #marked <= 18) then
  return corrupt(mark .. ' holds no sequence number: ' .. shown(marked))
end
if not m[3] or (ARGV[2] ~= '' and (m[1] or '0') ~= ARGV[2]) then return {'skip', 'changed'} end
if marked then
  -- requeued already (by a process that died before removing it, before this script):
  -- the letter's copy in the mailbox is the one that counts
  redis.call('LREM', dead, 1, ARGV[1])
  return {'skip', 'gone'}
end
if redis.call('LREM', dead, 1, ARGV[1]) == 0 then return {'skip', 'gone'} end
local now = now_ms()
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('RPUSH', mbox, seq .. ' ' .. now .. ' ' .. ARGV[3] .. '\n' .. ARGV[4])
redis.call('SET', mark, seq, 'EX', tonumber(ARGV[5]))
local woke = 0
if (m[3] == 'idle' or m[3] == 'active') and redis.call('HGET', meta, 'sched') ~= '1' then
  redis.call('HSET', meta, 'sched', 1, 'sched_at', now, 'status', 'active')
  woke = 1
end
bump_rev(meta)
return {'requeued', woke, seq}
