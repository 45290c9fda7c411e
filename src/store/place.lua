-- Sets one member's score in one group of rankings, atomically with the
-- group's landmarks: used when an article moves into a section or tag, where
-- it takes its overall score. In mode 'add' the score is added instead (a
-- tag's score in Popular Tags gains or loses the article's overall score
-- when the article takes or drops the tag); a member left with no score is
-- removed. Mirrors store::memory::MemoryStore::publish.
--
-- KEYS[1]         the group's meta hash (landmarks)
-- KEYS[2 .. n+1]  one ranking zset per profile
-- ARGV: member, at_ms, max_members, n,
--       then n × (profile name, half-life ms, score decayed to at_ms or ''),
--       then the group's time to live in ms (0: none), as apply.lua,
--       then the mode: 'set' or 'add'.
local member = ARGV[1]
local at = tonumber(ARGV[2])
local max_members = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local add = ARGV[6 + 3 * n] == 'add'
for p = 1, n do
  local i = 5 + 3 * (p - 1)
  local h = tonumber(ARGV[i + 1])
  local score = ARGV[i + 2]
  if score ~= '' then
    local field = 'landmark:' .. ARGV[i]
    local l = redis.call('HGET', KEYS[1], field)
    if not l then
      redis.call('HSET', KEYS[1], field, ARGV[2])
      l = at
    else
      l = tonumber(l)
    end
    local key = KEYS[1 + p]
    local v = tonumber(score) * 2 ^ ((at - l) / h)
    if add then
      local now = tonumber(redis.call('ZINCRBY', key, v, member))
      -- What rounding leaves of a score taken away is no score.
      if now <= math.abs(v) * 1e-9 then
        redis.call('ZREM', key, member)
      end
    else
      redis.call('ZADD', key, v, member)
    end
    local card = redis.call('ZCARD', key)
    if card > max_members then
      redis.call('ZREMRANGEBYRANK', key, 0, card - max_members - 1)
    end
  end
end
local ttl = tonumber(ARGV[5 + 3 * n])
if ttl and ttl > 0 then
  for k = 1, #KEYS do
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
return 1
