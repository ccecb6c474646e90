"""The Lua scripts that make settlements atomic, and how they are run.

Each script that settles a message does nothing when it is no longer pending: a settle
retried after a lost reply never duplicates a retry or a dead letter. A script that
writes a copy (retry, dead letter, replay) writes it before it removes the original:
Redis rolls nothing back, so a script that fails halfway leaves the message pending,
never gone. Copies with many fields are packed (``_packed``), so no Lua limit fails one.
Scripts touch only a stream and its companion keys (one hash tag), and take every key
they touch in KEYS.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from pulses_redis._packed import PACK_ABOVE, PACKED

__all__ = [
    "ACK",
    "BEAT",
    "CLAIM_OWN",
    "DEAD_LETTER",
    "DELETE_CONSUMER",
    "FORGET",
    "MOVE_DUE",
    "PUBLISH_ONCE",
    "PURGE",
    "READ",
    "RECLAIM",
    "RECOVER",
    "REPLAY",
    "RETRY",
    "SCHEDULE",
    "TRIM",
    "Client",
    "Script",
    "failed_call",
    "run_pipeline",
    "run_script",
]

Arg = str | bytes | int
Client = Redis | RedisCluster
"""One server (or a Sentinel-managed master), or a Redis Cluster."""


class Script:
    """A Lua script called by its SHA1, loaded again when the server lost it."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def call(self, keys: Sequence[str], args: Sequence[Arg]) -> tuple[Arg, ...]:
        """The EVALSHA command for these keys and arguments."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


_PRELUDE = """
local unpack = unpack or table.unpack
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# A delayed entry is a sorted-set member: a unique token, a newline, then each field as
# "<length>:<bytes>". Binary-safe, and decoded without any Lua library.
_ENCODE = """
local function schedule(key, delay_ms, token, first)
  local parts = {token, '\\n'}
  for i = first, #ARGV do parts[#parts + 1] = #ARGV[i] .. ':' .. ARGV[i] end
  redis.call('ZADD', key, string.format('%.0f', now_ms() + delay_ms), table.concat(parts))
end
"""

ACK = Script(
    "ack",
    _PRELUDE
    + """
-- KEYS: source, counts. ARGV: group, counter, delete ('1' for a retry stream), ids...
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 4))
if acked > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], acked) end
if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], unpack(ARGV, 4)) end
return acked
""",
)

RETRY = Script(
    "retry",
    _PRELUDE
    + _ENCODE
    + """
-- KEYS: source, retry stream, delayed retries. ARGV: group, id, delete, after_ms, token,
-- fields of the new entry...
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then return 0 end
local after = tonumber(ARGV[4])
if after == 0 then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 6))
else
  schedule(KEYS[3], after, ARGV[5], 6)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
return 1
""",
)

DEAD_LETTER = Script(
    "dead_letter",
    _PRELUDE
    + """
-- KEYS: source, dead letters, counts. ARGV: group, id, delete, record fields...
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
return 1
""",
)

SCHEDULE = Script(
    "schedule",
    _PRELUDE
    + _ENCODE
    + """
-- KEYS: delayed set. ARGV: delay_ms, token, fields...
schedule(KEYS[1], tonumber(ARGV[1]), ARGV[2], 3)
return 1
""",
)

PUBLISH_ONCE = Script(
    "publish_once",
    _PRELUDE
    + _ENCODE
    + """
-- Idempotent publish: append (or schedule) unless the key was used within its window.
-- KEYS: stream, delayed set, the key's marker. ARGV: window_ms, delay_ms, ticket, fields...
-- Returns {1, new message id} or {0, the id the key's first publish got}.
local first = redis.call('GET', KEYS[3])
if first then return {0, first} end
local id = ARGV[3]
if tonumber(ARGV[2]) > 0 then
  schedule(KEYS[2], tonumber(ARGV[2]), ARGV[3], 4)
else
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
end
redis.call('SET', KEYS[3], id, 'PX', ARGV[1])
return {1, id}
""",
)

MOVE_DUE = Script(
    "move_due",
    _PRELUDE
    + f"local PACKED, PACK_ABOVE = '{PACKED.decode()}', {PACK_ABOVE}\n"
    + """
-- KEYS: pairs of (sorted set of delayed entries, stream they go to when due).
-- ARGV: most entries to move per set. Returns ms until the next one is due, or -1.
local now = now_ms()
local next_due = -1
for k = 1, #KEYS, 2 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
  for _, member in ipairs(due) do
    local start = string.find(member, '\\n', 1, true) + 1
    local pos = start
    local fields = {}
    while pos <= #member do
      local colon = string.find(member, ':', pos, true)
      local len = tonumber(string.sub(member, pos, colon - 1))
      fields[#fields + 1] = string.sub(member, colon + 1, colon + len)
      pos = colon + len + 1
    end
    -- Too many for unpack (scheduled unpacked by an older Pulses): one failing entry
    -- would stop every move. Its fields are already laid out as a packed value.
    if #fields > PACK_ABOVE then fields = {PACKED, string.sub(member, start)} end
    redis.call('XADD', KEYS[k + 1], '*', unpack(fields))
    redis.call('ZREM', KEYS[k], member)
  end
  local first = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = math.max(0, tonumber(first[2]) - now)
    if next_due < 0 or wait < next_due then next_due = wait end
  end
end
return next_due
""",
)

RECOVER = Script(
    "recover",
    """
-- This consumer's own pending entries that it does not hold: after a restart, what its
-- previous life held (each one more delivery, and a suspect); after a failed fetch, what
-- that fetch may have taken (counts unchanged). A read of the own pending list
-- (XREADGROUP ... 0) would raise the count of every entry of the batch instead.
-- A suspect (count above 1) comes alone: the call stops before one when it has others.
-- KEYS: stream. ARGV: group, consumer, start (inclusive, or '(' id), count, increment
-- (1 or 0), '1' when a suspect may come (the caller has nothing yet), ids to skip (held
-- by this very consumer)...
-- Returns {entries, counts, vanished ids, done (1 when nothing is left), last id looked at
-- ('' for none), 1 when it stopped at a suspect (with it, or before it)}.
local group, me, want, inc = ARGV[1], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
local skip = {}
local taken = ARGV[6] == '1' and 0 or 1  -- entries this fetch has: a suspect needs 0
for i = 7, #ARGV do skip[ARGV[i]] = true end
local pending = redis.call('XPENDING', KEYS[1], group, ARGV[3], '+', want, me)
local entries, counts, vanished = {}, {}, {}
local last = ''
local done = #pending < want and 1 or 0
for _, p in ipairs(pending) do
  local id = p[1]
  local count = p[4] + inc
  if not skip[id] then
    local entry = redis.call('XRANGE', KEYS[1], id, id)
    if #entry == 0 then
      redis.call('XACK', KEYS[1], group, id)
      vanished[#vanished + 1] = id
    else
      if count > 1 and #entries + taken > 0 then return {entries, counts, vanished, 0, last, 1} end
      redis.call('XCLAIM', KEYS[1], group, me, 0, id, 'RETRYCOUNT', count, 'JUSTID')
      entries[#entries + 1] = entry[1]
      counts[#counts + 1] = count
      if count > 1 then return {entries, counts, vanished, 0, id, 1} end
    end
  end
  last = id
end
return {entries, counts, vanished, done, last, 0}
""",
)

READ = Script(
    "read",
    """
-- New entries for one consumer over many streams, never more than max_count in total
-- (XREADGROUP's COUNT is per stream): each stream gets a fair share of what is left,
-- and streams that filled their share are asked again while slots remain.
-- KEYS: streams, in this call's order. ARGV: group, consumer, max_count.
-- Returns XREADGROUP's reply shape: {{stream, entries}, ...}.
local group, me, remaining = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
local active = {}
for i = 1, #KEYS do active[i] = i end
while remaining > 0 and #active > 0 do
  local full = {}
  local n = #active
  for j, i in ipairs(active) do
    if remaining <= 0 then break end
    local share = math.max(1, math.floor(remaining / (n - j + 1)))
    local reply = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', share,
                             'STREAMS', KEYS[i], '>')
    if reply then
      local entries = reply[1][2]
      out[#out + 1] = {KEYS[i], entries}
      remaining = remaining - #entries
      if #entries == share then full[#full + 1] = i end
    end
  end
  active = full
end
return out
""",
)

RECLAIM = Script(
    "reclaim",
    _PRELUDE
    + """
-- Take over messages of other consumers: every one held by a consumer whose heartbeat
-- lapsed more than grace ms ago, then those idle longer than min_idle in any consumer,
-- with exact delivery counts. A suspect (delivered before and never settled: a count
-- above 1 after this claim) comes alone; released entries (count lowered) do not.
-- XPENDING's IDLE filter reaches idle entries behind any number of fresh ones; entries
-- deleted from the stream are acked and reported once instead of claimed. One call
-- looks at no more than count + 1000 pending entries, so a trimmed backlog of any size
-- blocks the server for a bounded time; the next call goes on.
-- KEYS: stream, heartbeats. ARGV: group, consumer, min_idle, count, grace, '1' when a
-- suspect may come (the caller has nothing yet). Returns {claimed entries, their
-- counts, vanished ids}.
local group, me = ARGV[1], ARGV[2]
local min_idle, want, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local taken = ARGV[6] == '1' and 0 or 1  -- what the caller has: a suspect needs 0
local now = now_ms()
local ids, counts, vanished = {}, {}, {}
local budget = want + 1000
local open = true  -- false once the batch is complete
local function take(p)
  budget = budget - 1
  local id = p[1]
  if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
    redis.call('XACK', KEYS[1], group, id)
    vanished[#vanished + 1] = id
  else
    local suspect = p[4] > 0
    if suspect and #ids + taken > 0 then
      open = false
    else
      ids[#ids + 1] = id
      counts[#counts + 1] = p[4] + 1
      open = not suspect and #ids < want
    end
  end
  if budget <= 0 then open = false end
end
local summary = redis.call('XPENDING', KEYS[1], group)
if summary[1] > 0 then
  for _, holder in ipairs(summary[4]) do
    local name = holder[1]
    local expiry = tonumber(redis.call('HGET', KEYS[2], name))
    if open and name ~= me and expiry and expiry + grace < now then
      local start = '-'
      while open do
        local page = redis.call('XPENDING', KEYS[1], group, start, '+', 100, name)
        for _, p in ipairs(page) do
          if open then take(p) end
          start = '(' .. p[1]
        end
        if #page < 100 then break end
      end
    end
  end
end
local start = '-'
while open do
  local page = math.min(math.max(want - #ids, 100), budget)
  local batch = redis.call('XPENDING', KEYS[1], group, 'IDLE', min_idle, start, '+', page)
  for _, p in ipairs(batch) do
    if open then take(p) end
    start = '(' .. p[1]
  end
  if #batch < page then break end
end
-- One script: nothing changed since XPENDING, so no idle time needs checking again.
local claimed = {}
for i = 1, #ids, 1000 do
  local last = math.min(i + 999, #ids)
  for _, entry in ipairs(redis.call('XCLAIM', KEYS[1], group, me, 0, unpack(ids, i, last))) do
    claimed[#claimed + 1] = entry
  end
end
return {claimed, counts, vanished}
""",
)

BEAT = Script(
    "beat",
    _PRELUDE
    + """
-- A consumer says it is alive. KEYS: heartbeats. ARGV: consumer, ttl (ms).
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now_ms() + tonumber(ARGV[2])))
return 1
""",
)

FORGET = Script(
    "forget",
    _PRELUDE
    + """
-- Remove consumers whose heartbeat lapsed more than forget ms ago and that hold nothing,
-- from the group on the stream and on its retry stream, so info stops listing them.
-- KEYS: stream, retry stream, heartbeats. ARGV: group, forget (ms). Returns how many.
local group, forget = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local beats = redis.call('HGETALL', KEYS[3])
local removed = 0
for i = 1, #beats, 2 do
  local name, expiry = beats[i], tonumber(beats[i + 1])
  if expiry + forget < now then
    local holds = false
    for k = 1, 2 do
      local p = redis.pcall('XPENDING', KEYS[k], group, '-', '+', 1, name)
      if type(p) == 'table' and p['err'] == nil and #p > 0 then holds = true end
    end
    if not holds then
      for k = 1, 2 do redis.pcall('XGROUP', 'DELCONSUMER', KEYS[k], group, name) end
      redis.call('HDEL', KEYS[3], name)
      removed = removed + 1
    end
  end
end
return removed
""",
)

CLAIM_OWN = Script(
    "claim_own",
    """
-- Renew the lease of (or hand over) only the entries this consumer still owns: one
-- frozen past claim_idle and resumed must not claim back what a neighbour reclaimed.
-- KEYS: stream. ARGV: group, owner, target, retrycount ('' renews the lease), ids.
-- Returns how many were claimed.
local group, me, target, retries = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local args = {KEYS[1], group, target, 0}
for i = 5, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1)[1]
  if p and p[2] == me then args[#args + 1] = ARGV[i] end
end
local n = #args - 4
if n == 0 then return 0 end
if retries ~= '' then
  for _, a in ipairs({'TIME', 1, 'RETRYCOUNT', retries}) do args[#args + 1] = a end
end
args[#args + 1] = 'JUSTID'
redis.call('XCLAIM', unpack(args))
return n
""",
)

TRIM = Script(
    "trim",
    """
-- Remove the oldest entries every group has acknowledged: below the oldest entry any
-- group still has pending or not yet read, and below the history to keep. No group:
-- nothing is removed (jobs published before the first worker must wait for it).
-- KEYS: stream, trim record (a hash). ARGV: '1' for a dry run; keep (a count, or '');
-- keep_ms (an age, or ''); limit: 0 removes exactly, N > 0 only whole nodes of the
-- stream, at most N entries (cheap, and a bounded pause for the server); removed by
-- earlier calls of this trim; '1' to record the trim. Returns the number removed (or
-- that would be).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function after(id)
  local ms, seq = parse(id)
  return string.format('%.0f-%.0f', ms, seq + 1)
end
local bound = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local keep = after(info['last-delivered-id'])
  if tonumber(info['pending']) > 0 then
    local oldest = redis.call('XPENDING', KEYS[1], info['name'])[2]
    if less(oldest, keep) then keep = oldest end
  end
  if bound == nil or less(keep, bound) then bound = keep end
end
if bound == nil then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if ARGV[3] ~= '' then
  local young = string.format('%.0f-0', math.max(0, now - tonumber(ARGV[3])))
  if less(young, bound) then bound = young end
end
local most = nil  -- with a count to keep: at most this many may go
if ARGV[2] ~= '' then most = math.max(0, redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])) end
local removed = 0
if ARGV[1] == '1' then  -- a dry run: count what would go, a page at a time
  local start = '-'
  while most == nil or removed < most do
    local page = redis.call('XRANGE', KEYS[1], start, '(' .. bound, 'COUNT', 1000)
    removed = removed + #page
    if #page < 1000 then break end
    start = '(' .. page[#page][1]
  end
  if most ~= nil and removed > most then removed = most end
  return removed
end
local limit = tonumber(ARGV[4])
if most ~= nil and limit > 0 then limit = math.min(limit, most) end
if most == 0 then
  removed = 0
elseif limit > 0 then
  -- Whole nodes only, so never an entry at or above the bound; LIMIT counts entries.
  removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', bound, 'LIMIT', limit)
elseif most ~= nil then
  -- What the whole-node calls left below the bound: less than a node, or ``most``.
  local page = redis.call('XRANGE', KEYS[1], '-', '(' .. bound, 'COUNT', most)
  if #page > 0 then removed = redis.call('XTRIM', KEYS[1], 'MINID', after(page[#page][1])) end
else
  removed = redis.call('XTRIM', KEYS[1], 'MINID', bound)
end
if removed > 0 then redis.call('HINCRBY', KEYS[2], 'removed', removed) end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[2], 'last_ms', now, 'last_removed', tonumber(ARGV[5]) + removed,
    'keep', ARGV[2], 'keep_ms', ARGV[3])
end
return removed
""",
)

DELETE_CONSUMER = Script(
    "delete_consumer",
    """
-- Remove a consumer from its group, on the stream and on its retry stream, and its
-- heartbeat, only when it holds nothing in either: what it holds is taken over once
-- its heartbeat lapses. KEYS: stream, retry stream, heartbeats. ARGV: group, consumer.
for k = 1, 2 do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    local pending = redis.pcall('XPENDING', KEYS[k], ARGV[1], '-', '+', 1, ARGV[2])
    if pending['err'] or #pending > 0 then return 0 end
  end
end
for k = 1, 2 do redis.pcall('XGROUP', 'DELCONSUMER', KEYS[k], ARGV[1], ARGV[2]) end
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
""",
)

REPLAY = Script(
    "replay",
    _PRELUDE
    + """
-- Publish a dead letter anew, once: only the call that still finds the record publishes,
-- then removes it. KEYS: dead letters, target stream. ARGV: dead-letter id, fields...
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
""",
)

PURGE = Script(
    "purge",
    """
-- KEYS: dead letters. Returns how many records were removed.
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
""",
)

_ALL = (
    READ,
    ACK,
    RETRY,
    DEAD_LETTER,
    SCHEDULE,
    PUBLISH_ONCE,
    MOVE_DUE,
    RECOVER,
    RECLAIM,
    BEAT,
    FORGET,
    CLAIM_OWN,
    TRIM,
    DELETE_CONSUMER,
    REPLAY,
    PURGE,
)
_BY_SHA = {script.sha: script for script in _ALL}


_SCRIPT_LINE = re.compile(r"script: ([0-9a-f]{40}), on @user_script:(\d+)")
_CALL = re.compile(r"redis\.call\('([A-Za-z]+)'")


def failed_call(message: str) -> str | None:
    """What a script error points at: Redis names only the script's SHA1 and line (an
    ACL refusal inside a script does not even name the command), so look them up."""
    found = _SCRIPT_LINE.search(message)
    script = _BY_SHA.get(found[1]) if found else None
    if found is None or script is None:
        return None
    lines = script.source.splitlines()
    number = int(found[2])
    call = _CALL.search(lines[number - 1]) if 0 < number <= len(lines) else None
    what = call[1].upper() if call else "a command"
    return f"{what} (line {number} of the Pulses script {script.name!r})"


async def command(client: Client, *args: Arg) -> Any:
    """One raw command; its reply as the server sent it (no redis-py callback applies)."""
    return await client.execute_command(*args)


async def _load(client: Client, commands: Sequence[tuple[Arg, ...]]) -> None:
    # After a restart or SCRIPT FLUSH the server has forgotten every script.
    shas = {str(command[1]) for command in commands if command[0] == "EVALSHA"}
    if isinstance(client, RedisCluster):
        # Onto every master: a new one (a promoted replica, a node added by a reshard)
        # may lack them.
        for sha in shas:
            await client.script_load(_BY_SHA[sha].source)
        return
    pipe = client.pipeline(transaction=False)
    for sha in shas:
        pipe.execute_command("SCRIPT", "LOAD", _BY_SHA[sha].source)
    await pipe.execute()


async def run_script(
    client: Client, script: Script, keys: Sequence[str], args: Sequence[Arg] = ()
) -> Any:
    """Call one script, loading it first if the server does not have it."""
    call = script.call(keys, args)
    try:
        return await command(client, *call)
    except NoScriptError:
        await _load(client, [call])
        return await command(client, *call)


async def run_pipeline(client: Client, commands: Sequence[tuple[Arg, ...]]) -> list[Any]:
    """Run commands in one pipeline (not a transaction); a result that is an error is
    returned as the exception. Scripts the server lost are loaded and run again: a
    NOSCRIPT reply means that script did not run."""
    results = await _execute(client, commands)
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        await _load(client, [commands[i] for i in missing])
        again = await _execute(client, [commands[i] for i in missing])
        for i, result in zip(missing, again, strict=True):
            results[i] = result
    return results


async def _execute(client: Client, commands: Sequence[tuple[Arg, ...]]) -> list[Any]:
    if not commands:
        return []
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    if not isinstance(client, RedisCluster):
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
    try:
        results = await pipe.execute(raise_on_error=False)
    except (rx.ConnectionError, rx.TimeoutError):
        _reload_topology(client)
        raise
    if any(isinstance(result, rx.ClusterDownError) for result in results):
        _reload_topology(client)
    return results


def _reload_topology(client: RedisCluster) -> None:
    """Have the next command ask the cluster which node serves which slot again.

    A single command that finds its node gone does this itself, but a pipeline (with
    redis-py's retries off, see _connection.py) does not: without it, every pipeline
    would go to a dead master forever while its replica has long taken over.
    """
    client._initialize = True  # redis-py's own flag; there is no public way to set it
