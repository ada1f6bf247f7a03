"""The Lua scripts the shared cache runs on Redis: one round trip per read, one per bump.

Kept apart from service.caching.cache so the mechanism reads as Python; the rules they keep are in
that module's doc (generations never go backwards; with read replicas, a fill never comes from
data older than the generation it is stored under).
"""

# Generations on Redis come from Redis's clock in microseconds (one clock for
# every worker and replica). A missing generation starts at the clock; a bump
# moves it to the clock, or one up if it is ahead. Scripts run one at a time
# and each takes longer than a microsecond, so a value is not ahead of the
# clock once written, and a generation that is lost and started again lands
# above every value it held (the rule in the module doc). The numbers stay
# below 2^53, exact in Lua.

# One round trip for a read: resolve the generations, start the missing ones,
# build the versioned key and GET it server-side. Redis runs scripts
# atomically; the script touches a key it computes, which is fine on a single
# Redis (not on Redis Cluster). KEYS are the generations, epoch first; ARGV[1]
# is the key's base, ARGV[2] the generations' TTL.
LOOKUP_SCRIPT = """
local gens = redis.call('MGET', unpack(KEYS))
local now = nil
for i = 1, #gens do
  if not gens[i] then
    if not now then
      local t = redis.call('TIME')
      now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
    end
    gens[i] = now
    redis.call('SET', KEYS[i], now, 'EX', ARGV[2])
  end
end
local key = ARGV[1] .. ':' .. table.concat(gens, '.')
return {key, redis.call('GET', key)}
"""

# Every generation in KEYS moves to Redis's clock, or one up if it is ahead.
BUMP_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local value = now
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current >= value then value = current + 1 end
  redis.call('SET', KEYS[i], string.format('%d', value), 'EX', ARGV[1])
end
return #KEYS
"""


# With read replicas (DATABASE_REPLICA_URLS) each generation `g:<name>` has a floor `f:<name>`:
# the highest WAL position (LSN) of a commit that bumped it. A miss may fill from a replica
# only once it replayed the highest floor of the entry's generations (service/storage/replicas.py);
# else the old row could be stored under the new generation. The same lookup as LOOKUP_SCRIPT
# (KEYS: the generations, then their floors, in the same order) that also returns that floor,
# before the value (a nil would end the reply there).
LOOKUP_FLOOR_SCRIPT = """
local n = #KEYS / 2
local gens = redis.call('MGET', unpack(KEYS, 1, n))
local floors = redis.call('MGET', unpack(KEYS, n + 1, 2 * n))
local now = nil
local floor = 0
for i = 1, n do
  if not gens[i] then
    if not now then
      local t = redis.call('TIME')
      now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
    end
    gens[i] = now
    redis.call('SET', KEYS[i], now, 'EX', ARGV[2])
  end
  local f = tonumber(floors[i] or '0')
  if f > floor then floor = f end
end
local key = ARGV[1] .. ':' .. table.concat(gens, '.')
return {key, string.format('%d', floor), redis.call('GET', key)}
"""

# BUMP_SCRIPT with floors: KEYS are the generations, then their floors; each floor moves up to
# ARGV[2] before its generation moves, in one script, so no reader sees the new generation with
# the old floor.
BUMP_FLOOR_SCRIPT = """
local n = #KEYS / 2
local lsn = tonumber(ARGV[2])
for i = n + 1, 2 * n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if lsn > current then current = lsn end
  redis.call('SET', KEYS[i], string.format('%d', current), 'EX', ARGV[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, n do
  local value = now
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current >= value then value = current + 1 end
  redis.call('SET', KEYS[i], string.format('%d', value), 'EX', ARGV[1])
end
return n
"""

# A miss across workers and replicas (`SharedCache._load_once`): KEYS[1] is the
# versioned entry, KEYS[2] its fill lock. Returns {1, value} when the entry is
# there, {2} when this caller took the lock (ARGV[1] its token, ARGV[2] its
# life in ms), {0} while another holds it.
CLAIM_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
"""

# Store the entry (ARGV[2], TTL ARGV[3]) when ARGV[2] is given, and free the
# fill lock if it is still this caller's (token ARGV[1]): one round trip.
FILL_SCRIPT = """
if ARGV[2] then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

# A read with a signed-in viewer's flags, in one round trip (service.caching.personalize). KEYS:
# the entry's generations (epoch first), then their floors when ARGV[4] is '1', then the viewer's
# generation of each fact. ARGV: the entry's base, the generations' TTL, the number of the entry's
# generations, '1' with floors, the prefix of the viewer's sets, the number of lines before the
# entry's facts header, then the name of each fact. The viewer's set of fact j is
# `<set prefix><name>:<epoch>.<viewer's generation>` and always holds '0' (a set cannot be empty);
# one that holds '-1' was too large to keep. Returns {key, floor, value or false, one reply per
# fact}: false when the entry names no object for the fact, the set's key when the set is
# missing (the caller builds it), else one 0/1 per id of the header, then 1 if the set was too large.
VIEW_SCRIPT = """
local n = tonumber(ARGV[3])
local now = nil
local function gens_of(first, count)
  local keys = {}
  for i = first, first + count - 1 do keys[#keys + 1] = KEYS[i] end
  local vals = redis.call('MGET', unpack(keys))
  for i = 1, count do
    if not vals[i] then
      if not now then
        local t = redis.call('TIME')
        now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
      end
      vals[i] = now
      redis.call('SET', keys[i], now, 'EX', ARGV[2])
    end
  end
  return vals
end
local gens = gens_of(1, n)
local floor = 0
local first = n + 1
if ARGV[4] == '1' then
  local floors = redis.call('MGET', unpack(KEYS, n + 1, 2 * n))
  for i = 1, n do
    local f = tonumber(floors[i] or '0')
    if f > floor then floor = f end
  end
  first = 2 * n + 1
end
local key = ARGV[1] .. ':' .. table.concat(gens, '.')
local value = redis.call('GET', key)
local reply = {key, string.format('%d', floor), value}
local m = #KEYS - first + 1
if not value or m == 0 then return reply end
local at = 2  -- after the serializer's '=' (service.caching.cache.BytesSerializer)
for s = 1, tonumber(ARGV[6]) do at = string.find(value, '\\n', at, true) + 1 end
local header = cjson.decode(string.sub(value, at, string.find(value, '\\n', at, true) - 1))
local viewer = gens_of(first, m)
for j = 1, m do
  local marks = header[ARGV[6 + j]]
  if marks and #marks > 0 then
    local set = ARGV[5] .. ARGV[6 + j] .. ':' .. gens[1] .. '.' .. viewer[j]
    if redis.call('EXISTS', set) == 0 then
      reply[3 + j] = set
    else
      local ids = {}
      for i = 1, #marks do ids[i] = marks[i][1] end
      ids[#ids + 1] = '-1'
      reply[3 + j] = redis.call('SMISMEMBER', set, unpack(ids))
    end
  else
    reply[3 + j] = false
  end
end
return reply
"""

# Build a viewer's set (KEYS[1]) once: '0', then ARGV[2..] (the ids, or '-1' for a set too large to
# keep), TTL ARGV[1]. A set another caller built meanwhile under the same key holds the same ids.
FILL_SET_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 1000 do
  redis.call('SADD', KEYS[1], '0', unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if #ARGV < 2 then redis.call('SADD', KEYS[1], '0') end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
