-- One actor type's ready set and its live task runs (runner.serve_ready): a run, after the
-- actor it was published for, takes woken actors from the set until its time is up, so a
-- burst of wakes costs a few Celery tasks, not one each.
-- KEYS[1] ready set (zset: actor key -> ms it was added)
-- KEYS[2] live runs (zset: Celery task id -> ms until which it counts as live)
-- KEYS[3] taken (hash: task id -> JSON list of the actor keys it holds and has not served)
-- ARGV[1] mode: 'push' | 'take' | 'end' | 'lost'
-- ARGV[2] push: the task id for a new run; else this run's task id
-- ARGV[3] how long a run counts as live without coming back (ms)
-- ARGV[4] take / end / lost: a task id for a new run ('' for none)
-- ARGV[5] how many a run takes at once   ARGV[6] most live runs of the type
-- ARGV[7..] push: the actor key; end: the actors it took and gives back unserved
-- push: 1 when no run was live, or more wait than the live runs take at once (below
--   ARGV[6] runs): ARGV[2] is live now, holding the actor, and the caller publishes it for
--   that actor; else 0: the actor waits in the set.
-- take: {new run's actor or '', actor_1, ...}: no actor means the run is no longer live.
--   When more wait and fewer than ARGV[6] runs are live, one more actor is taken for the new
--   run ARGV[4], which the caller publishes for it.
-- end: the run is no longer live; when actors wait and fewer than ARGV[6] runs are live,
--   one is handed to a new run ARGV[4]: {actor}, else {''}. lost: the same for a run whose process died (its
--   worker's main process says so), every actor it held going back to the set.
-- A run that stops coming back (its worker died) is no longer live; the actors it held go
-- back to the set, for the next run (their claim decides whether anything is to be done).
local ready, runs, taken = KEYS[1], KEYS[2], KEYS[3]
local err = check_types(ready, 'zset', runs, 'zset', taken, 'hash')
if err then return err end
local mode, run, live = ARGV[1], ARGV[2], tonumber(ARGV[3])
local held = {}
if mode == 'lost' then
  held, err = ready_held(taken, run)
  if err then return err end
end
local now = now_ms()
local gone
gone, err = ready_dead(runs, taken, now)
if err then return err end
ready_bury(ready, runs, taken, gone, now)
local function spawn()
  local head = redis.call('ZPOPMIN', ready, 1)
  ready_start(runs, taken, ARGV[4], head[1], now, live)
  return head[1]
end
local take, most = tonumber(ARGV[5]), tonumber(ARGV[6])
if mode == 'push' then return ready_push(ready, runs, taken, ARGV[7], run, now, live, take, most) end
-- take / end / lost: this run holds nothing any more (it served what it took, or gives it
-- back)
if mode == 'end' then
  for i = 7, #ARGV do redis.call('ZADD', ready, 'NX', now, ARGV[i]) end
end
for _, key in ipairs(held) do redis.call('ZADD', ready, 'NX', now, key) end
redis.call('HDEL', taken, run)
redis.call('ZREM', runs, run)
if mode ~= 'take' then
  if ARGV[4] ~= '' and redis.call('ZCARD', ready) > 0 and redis.call('ZCARD', runs) < most then
    return {spawn()}
  end
  return {''}
end
local got = redis.call('ZPOPMIN', ready, take)
if #got == 0 then return {''} end
local keys = {}
for i = 1, #got, 2 do keys[#keys + 1] = got[i] end
redis.call('ZADD', runs, now + live, run)
redis.call('HSET', taken, run, cjson.encode(keys))
local out = {''}
if ARGV[4] ~= '' and redis.call('ZCARD', ready) > 0 and redis.call('ZCARD', runs) < most then
  out[1] = spawn()
end
for _, key in ipairs(keys) do out[#out + 1] = key end
return out
