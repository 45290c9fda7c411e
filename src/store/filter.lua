-- Saves one partition's duplicate-filter delta after its batch was applied
-- to every group (DESIGN §4, src/fence.rs rule 6). Mirrors
-- store::memory::MemoryStore::save_filters.
--
-- KEYS[1]  the partition's filter meta hash (fence, seed)
-- KEYS[2]  the list of deltas since the last snapshot
-- ARGV: fence the delta starts from or '', new fence, seed, snapshot ('1'
--       or '0'), delta
-- A delta holds every window that changed after the fence it starts from,
-- with its value at the new fence, so it applies on any saved state at or
-- after that fence (one written by a zombie or an earlier attempt too). A
-- snapshot is the whole state and replaces whatever is saved.
-- Returns 0 when saved, 1 when the saved state already reaches the new
-- fence, 2 when a delta cannot apply (the saved state is older than where
-- the delta starts, or was named with another seed): nothing is written,
-- and the writer saves a snapshot next.
local stored = tonumber(redis.call('HGET', KEYS[1], 'fence'))
local new = tonumber(ARGV[2])
if stored and stored >= new then
  return 1
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'seed', ARGV[3])
else
  local from = tonumber(ARGV[1]) or -1
  local seed = redis.call('HGET', KEYS[1], 'seed')
  if (stored or -1) < from or (seed and seed ~= ARGV[3]) then
    return 2
  end
  redis.call('HSETNX', KEYS[1], 'seed', ARGV[3])
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'fence', ARGV[2])
return 0
