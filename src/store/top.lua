-- Reads one ranking with its group's landmark, atomically (a rebase moves
-- both): one command, so that in a cluster it is routed like any other.
-- Mirrors the read of store::memory::MemoryStore::top.
--
-- KEYS[1]  the group's meta hash (landmarks)
-- KEYS[2]  the ranking zset
-- ARGV: landmark field, first rank, last rank
-- Returns {landmark or nil, {member, value, member, value, ...}}.
local l = redis.call('HGET', KEYS[1], ARGV[1])
if not l then
  return {false, {}}
end
return {l, redis.call('ZREVRANGE', KEYS[2], ARGV[2], ARGV[3], 'WITHSCORES')}
