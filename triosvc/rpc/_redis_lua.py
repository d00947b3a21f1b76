"""The Lua scripts of the Redis transport (see :mod:`triosvc.rpc._redis` for the layout).

Each step that must not be seen half done (checking liveness and room before queueing a
call, answering a call at most once, forgetting a dead instance and failing its calls) is
one script: Redis runs a script atomically. Times are Redis's own clock (``TIME``, in
milliseconds), the one clock every host shares; deadlines cross as time left.

Keys (``P`` is the prefix, ``triosvc`` by default):

- ``P:leases``: sorted set of every instance holding a lease, ``"<id> <capacity> <service>"``
  scored by when its lease ends (the key itself lives twice as long as a lease, so that a
  reaper sees the leases in it lapse);
- ``P:live:<service>``: sorted set of the instances taking calls, ``"<id> <capacity>"``,
  scored the same way;
- ``P:queue:<service>``: list of the calls waiting for an instance (pushed on the left,
  taken from the right);
- ``P:taken:<id>``: list of the calls an instance took and has not answered, plus a
  sentinel so that the key (and its lifetime) exists before the first call is moved in;
  it too lives twice as long as the lease, for the reaper;
- ``P:reply:<transport id>``: list of the answers to one transport's callers.

A call travels as ``"<deadline ms> <call id> <reply key>\\n<payload>"``; an answer as
``"<call id> reply\\n<payload>"`` or ``"<call id> unavailable\\n<message>"``. Every key gets
a lifetime in the script that creates it.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACCEPT",
    "DROP",
    "ENQUEUE",
    "HAND_BACK",
    "RENEW",
    "REPLY",
    "SENTINEL",
    "STOP",
    "WITHDRAW",
]

#: The first element of every ``taken`` list (never a call: calls start with a digit).
SENTINEL: Final = "-"

_PRELUDE: Final = """
local SENTINEL = '-'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Give a key at least `ms` more to live; never shorten a lifetime another user needs.
local function extend(key, ms)
  local left = redis.call('PTTL', key)
  if left == -2 then return end
  if left == -1 or left < ms then redis.call('PEXPIRE', key, math.ceil(ms)) end
end

local function header(envelope)
  local deadline, id, reply = string.match(envelope, '^(%d+) (%S+) (%S+)\\n')
  return tonumber(deadline), id, reply
end

local function fail(envelope, message, reply_ttl)
  local _, id, reply = header(envelope)
  if id then
    redis.call('LPUSH', reply, id .. ' unavailable\\n' .. message)
    redis.call('PEXPIRE', reply, reply_ttl)
  end
end

local function live_members(prefix, service, now)
  local live = prefix .. ':live:' .. service
  redis.call('ZREMRANGEBYSCORE', live, '-inf', '(' .. now)
  return redis.call('ZRANGE', live, 0, -1)
end

-- Calls queued for a service that nobody takes calls for any more: fail them now rather
-- than let their callers wait for their deadlines.
local function orphans(prefix, service, now, reply_ttl, message)
  if #live_members(prefix, service, now) > 0 then return end
  local queue = prefix .. ':queue:' .. service
  for _, envelope in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    fail(envelope, message, reply_ttl)
  end
  redis.call('DEL', queue)
end

-- A call taken but not run goes back to the head of its queue, or fails if no instance is
-- left; one whose deadline passed is dropped (nobody waits for it).
local function hand_back(prefix, service, envelope, now, reply_ttl, slack, message)
  local deadline = header(envelope)
  if not deadline or deadline <= now then return end
  if #live_members(prefix, service, now) == 0 then
    fail(envelope, message, reply_ttl)
    return
  end
  local queue = prefix .. ':queue:' .. service
  redis.call('RPUSH', queue, envelope)
  extend(queue, deadline - now + slack)
end

-- Forget an instance: fail the calls it took and did not answer, end its lease. Its taken
-- list stays as a sentinel with a lifetime, so that a move still in flight towards it
-- cannot create a key that lives for ever.
local function drop(prefix, member, now, reply_ttl, lease_ttl, message, orphan_message)
  local id, cap, service = string.match(member, '^(%S+) (%d+) (.*)$')
  if not id then return end
  local taken = prefix .. ':taken:' .. id
  for _, envelope in ipairs(redis.call('LRANGE', taken, 0, -1)) do
    if envelope ~= SENTINEL then fail(envelope, message, reply_ttl) end
  end
  redis.call('DEL', taken)
  redis.call('RPUSH', taken, SENTINEL)
  redis.call('PEXPIRE', taken, lease_ttl)
  redis.call('ZREM', prefix .. ':leases', member)
  redis.call('ZREM', prefix .. ':live:' .. service, id .. ' ' .. cap)
  orphans(prefix, service, now, reply_ttl, orphan_message)
end

-- Instances whose lease ended without being renewed have died (or lost Redis for longer
-- than their lease): their callers hear of it now.
local function reap(prefix, now, reply_ttl, lease_ttl)
  local leases = prefix .. ':leases'
  local dead = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now, 'LIMIT', 0, 100)
  for _, member in ipairs(dead) do
    local service = string.match(member, '^%S+ %d+ (.*)$') or '?'
    local quoted = "'" .. service .. "'"
    drop(prefix, member, now, reply_ttl, lease_ttl,
      'the instance of ' .. quoted .. ' that took this call stopped renewing its lease ' ..
      '(it died, or lost Redis) before answering; the call may have run in part',
      'no live instance of ' .. quoted .. ' was left to take this call')
  end
end
"""

#: Queue a call, if the service has a live instance and room.
#: KEYS: live, queue. ARGV: prefix, service, ms left, call id, reply key, payload,
#: reply ttl, queue slack, lease ttl.
#: Returns ``{'unknown'}``, ``{'full'}`` or ``{'queued', deadline}``.
ENQUEUE: Final = (
    _PRELUDE
    + """
local prefix, service = ARGV[1], ARGV[2]
local now = now_ms()
reap(prefix, now, ARGV[7], ARGV[9])
local live = live_members(prefix, service, now)
if #live == 0 then return {'unknown'} end
local room = 0
for _, member in ipairs(live) do room = room + tonumber(string.match(member, ' (%d+)$')) end
if redis.call('LLEN', KEYS[2]) >= room then return {'full'} end
local left = tonumber(ARGV[3])
local deadline = string.format('%.0f', now + left)
redis.call('LPUSH', KEYS[2], deadline .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. '\\n' .. ARGV[6])
extend(KEYS[2], left + tonumber(ARGV[8]))
return {'queued', deadline}
"""
)

#: Take a call back out of its queue, by id (its caller gave up, perhaps before it knew
#: the deadline the call was queued with). KEYS: queue. ARGV: call id. Returns 1 if found.
WITHDRAW: Final = (
    _PRELUDE
    + """
for _, envelope in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local _, id = header(envelope)
  if id == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, envelope)
    return 1
  end
end
return 0
"""
)

#: Check a call an instance just moved into its taken list, and take up to ``more`` of
#: the calls queued behind it (non-blocking ``LMOVE``), one per other free worker of the
#: instance, so that a busy service drains its queue in batches rather than one round trip
#: sequence per call.
#: KEYS: leases, taken, queue. ARGV: prefix, service, lease member, envelope, taken list's
#: ttl (twice the lease's), reply ttl, queue slack, more.
#: Returns ``{'lapsed'}`` (this instance's lease ended: the call went back, nothing more
#: was taken) or ``{'ok', envelope, ms left, envelope, ms left, ...}``: the calls taken, in
#: queue order; a call whose deadline passed while it was queued is dropped, not listed.
ACCEPT: Final = (
    _PRELUDE
    + """
local prefix, service, envelope = ARGV[1], ARGV[2], ARGV[4]
local now = now_ms()
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('LREM', KEYS[2], 1, envelope)
  hand_back(prefix, service, envelope, now, ARGV[6], tonumber(ARGV[7]),
    "no live instance of '" .. service .. "' was left to take this call")
  return {'lapsed'}
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local taken = {'ok'}
local function check(call)
  local deadline = header(call)
  if not deadline or deadline <= now then
    redis.call('LREM', KEYS[2], 1, call)
  else
    taken[#taken + 1] = call
    taken[#taken + 1] = string.format('%.0f', deadline - now)
  end
end
check(envelope)
for _ = 1, tonumber(ARGV[8]) do
  local call = redis.call('LMOVE', KEYS[3], KEYS[2], 'RIGHT', 'LEFT')
  if not call then break end
  check(call)
end
return taken
"""
)

#: Answer a call, once: only if it is still in the taken list (not failed by a reaper).
#: KEYS: taken, reply key. ARGV: envelope, answer, reply ttl. Returns 1 if sent.
REPLY: Final = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

#: Renew a transport's leases (and reap the dead first); re-registers an instance that a
#: restarted Redis forgot, or that was reaped while it could not reach Redis.
#: KEYS: leases. ARGV: prefix, lease ttl, reply ttl, then pairs (lease member, '1' if it
#: takes calls else '0').
RENEW: Final = (
    _PRELUDE
    + """
local prefix, lease_ttl, reply_ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
reap(prefix, now, reply_ttl, lease_ttl)
local expiry = now + lease_ttl
-- The keys a reaper reads outlive the leases in them, so that it sees them lapse.
local keep = 2 * lease_ttl
for i = 4, #ARGV, 2 do
  local member = ARGV[i]
  local id, cap, service = string.match(member, '^(%S+) (%d+) (.*)$')
  redis.call('ZADD', KEYS[1], expiry, member)
  extend(KEYS[1], keep)
  local live = prefix .. ':live:' .. service
  if ARGV[i + 1] == '1' then
    redis.call('ZADD', live, expiry, id .. ' ' .. cap)
    extend(live, lease_ttl)
  else
    redis.call('ZREM', live, id .. ' ' .. cap)
  end
  local taken = prefix .. ':taken:' .. id
  if redis.call('EXISTS', taken) == 0 then redis.call('RPUSH', taken, SENTINEL) end
  redis.call('PEXPIRE', taken, keep)
end
return 1
"""
)

#: An instance stops taking calls: it leaves the live set at once; if it was the last,
#: the calls still queued fail.
#: KEYS: live. ARGV: prefix, service, live member, reply ttl, message.
STOP: Final = (
    _PRELUDE
    + """
redis.call('ZREM', KEYS[1], ARGV[3])
orphans(ARGV[1], ARGV[2], now_ms(), ARGV[4], ARGV[5])
return 1
"""
)

#: Hand back the calls in an instance's taken list that it never delivered (a move cut
#: short by closing, or by a lost connection).
#: KEYS: taken. ARGV: prefix, service, reply ttl, queue slack, message, then the ids of
#: the calls it did deliver (those stay).
HAND_BACK: Final = (
    _PRELUDE
    + """
local prefix, service = ARGV[1], ARGV[2]
local now = now_ms()
local delivered = {}
for i = 6, #ARGV do delivered[ARGV[i]] = true end
local handed = 0
for _, envelope in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if envelope ~= SENTINEL then
    local _, id = header(envelope)
    if not delivered[id] then
      redis.call('LREM', KEYS[1], 1, envelope)
      hand_back(prefix, service, envelope, now, ARGV[3], tonumber(ARGV[4]), ARGV[5])
      handed = handed + 1
    end
  end
end
return handed
"""
)

#: Forget instances that stop for good (their transport closes, or they closed and
#: answered everything): their unanswered calls fail.
#: KEYS: leases. ARGV: prefix, reply ttl, lease ttl, then lease members.
DROP: Final = (
    _PRELUDE
    + """
local prefix = ARGV[1]
local now = now_ms()
for i = 4, #ARGV do
  local service = string.match(ARGV[i], '^%S+ %d+ (.*)$') or '?'
  local quoted = "'" .. service .. "'"
  drop(prefix, ARGV[i], now, ARGV[2], ARGV[3],
    'the runner serving ' .. quoted .. ' stopped before answering this call',
    'every instance of ' .. quoted .. ' stopped before taking it; the call did not run')
end
return 1
"""
)
