-- Saves one partition's duplicate-filter delta after its batch was applied
-- to every group (DESIGN §4). Mirrors store::memory::MemoryStore::save_filters.
--
-- KEYS[1]  the partition's filter meta hash (fence, seed)
-- KEYS[2]  the list of deltas since the last snapshot
-- ARGV: expected fence or '', new fence, seed, snapshot ('1' or '0'), delta
-- Returns 0 when saved, 1 when the state already covers the new fence (an
-- earlier attempt, or the partition's next owner, saved it), 2 when the
-- stored fence is neither (another writer got in between): nothing written.
local stored = redis.call('HGET', KEYS[1], 'fence')
if stored and tonumber(stored) >= tonumber(ARGV[2]) then
  return 1
end
if (stored or '') ~= ARGV[1] then
  return 2
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[2])
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'fence', ARGV[2])
redis.call('HSETNX', KEYS[1], 'seed', ARGV[3])
return 0
