"""The Redis key layout, in one place. No other module builds a key string.

Every per-tenant key carries the tenant id as a hash tag (`monitor:{<tenant>}:…`), so all keys of a
tenant live in one Redis Cluster slot and a page commit (one script over the mirror, the change log
and the counters) stays a single-slot transaction (docs/architecture.md, "Rules that keep it
correct"). Keys shared by all tenants use fixed hash tags of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.scopes import ScopeId

NAMESPACE = "monitor"
# The lease the users and groups rounds of a tenant share (`TenantKeys.lease(DIRECTORY_LEASE)`): while
# it is held, nobody else writes memberships (monitor.sync, monitor.sinks.effective).
DIRECTORY_LEASE = "directory"


@dataclass(frozen=True, slots=True)
class TenantKeys:
    """Keys of one tenant."""

    tenant: str

    @property
    def base(self) -> str:
        return f"{NAMESPACE}:{{{self.tenant}}}"

    @property
    def pattern(self) -> str:
        """SCAN MATCH pattern of every key of the tenant (tenant removal deletes them all)."""
        return f"{self.base}:*"

    # -- mirror -----------------------------------------------------------------------------
    def mirror(self, scope: ScopeId) -> str:
        """HASH `_key` (UUIDs packed) -> the JupiterOne object (compressed canonical JSON), one hash per
        scope; `monitor.mirror_codec` says how fields and values are encoded."""
        return f"{self.base}:mirror:{scope}"

    @property
    def mirror_format(self) -> str:
        """STRING: the mirror's storage format once every entry is in it (`MIRROR_FORMAT`); until then
        `TenantStore.upgrade` rewrites the entries of an earlier version before reading any by key."""
        return f"{self.base}:mirrorformat"

    MIRROR_FORMAT = "2"

    @property
    def scopes(self) -> str:
        """SET of scope ids that have ever held an object (to enumerate the mirror without SCAN)."""
        return f"{self.base}:scopes"

    def member_of(self, member_id: str) -> str:
        """SET of group ids containing a placeholder member (device, service principal, contact).

        The placeholder entity exists while this set is non-empty (docs/jupiterone.md 1.4).
        """
        return f"{self.base}:memberof:{member_id}"

    def graph_residue(self, family: str) -> str:
        """HASH object id -> JSON of what the last Graph state of a user or group (entity `family`)
        holds that its mirrored entity does not: the entity plus this residue give back the Graph
        object, onto which a delta update carrying only some properties is merged
        (`monitor.model.graph_state`). Most objects have no residue and no field here. One hash per
        family, not per scope: a page's residues then cost one command in its commit.
        """
        return f"{self.base}:graph:{family}"

    def parked(self, object_id: str) -> str:
        """HASH, expiring `PARKED_TTL` after its last write: what a soft-deleted user or group takes
        with it, to give back on restore (`monitor.sources.parking`).

        Field `~` (present while the object is soft-deleted) holds its last Graph state as JSON;
        every other field is the key of a membership (`<group>|has|<member>`) one of whose ends is
        soft-deleted, with the member's `@odata.type` as value. A membership is filed under both of
        its ends, so that whichever end is restored or purged finds it.
        """
        return f"{self.base}:parked:{object_id}"

    # Graph keeps a deleted item restorable for up to 30 days, then deletes it permanently
    # (https://learn.microsoft.com/en-us/graph/api/directory-deleteditems-restore); a day more covers
    # clocks and late rounds.
    PARKED_TTL = 31 * 86400

    @property
    def soft_deleted(self) -> str:
        """SET of the ids of users and groups that are soft-deleted (whose `parked` hash has `~`)."""
        return f"{self.base}:softdeleted"

    @property
    def member_names(self) -> str:
        """HASH member id -> JSON {displayName, mail, jobTitle}: what `POST /directoryObjects/getByIds`
        said about a device, service principal or contact that is a group member, for its placeholder
        entity. Removed with the placeholder."""
        return f"{self.base}:membernames"

    # -- change log -------------------------------------------------------------------------
    @property
    def scope_versions(self) -> str:
        """HASH scope id -> seq of the last commit that wrote the scope.

        A page commit checks that the scopes it writes still have the versions it read them at
        (optimistic concurrency, one check per scope rather than per object).
        """
        return f"{self.base}:versions"

    @property
    def seq(self) -> str:
        """STRING: the last change-record sequence number of the tenant."""
        return f"{self.base}:seq"

    @property
    def changes(self) -> str:
        """STREAM: the change log, one entry per committed page.

        Entry id `<last seq of the page>-0`; fields `first` (the seq of its first record), `n` (the
        number of records) and `s` (the records, one JSON object per line in seq order, without
        their `seq`: line i has seq first + i; zstd-compressed, since records of one page repeat
        the same property names and the log is most of a tenant's memory). Entries written earlier
        hold the same lines zlib-compressed in `z`, or uncompressed in `r`; all three are read. Kept without trimming:
        replaying it from the start rebuilds the mirror (docs/change-record.md, "The replay rule").
        """
        return f"{self.base}:changes"

    def sink_cursor(self, sink: str) -> str:
        """STRING: the last seq a sink has delivered."""
        return f"{self.base}:cursor:{sink}"

    def sink_state(self, sink: str) -> str:
        """HASH {error, error_at, failing_since, failures}: present while deliveries to the sink fail
        (a full disk, a receiver down); deleted when its cursor next advances (`ADVANCE_CURSOR`)."""
        return f"{self.base}:sinkstate:{sink}"

    @property
    def log_restarts(self) -> str:
        """HASH sink name -> JSON {at, held_seq, new_log_from_seq}: the last time the sink found its
        destination holding records of an earlier log of the tenant (the seq started again at 1 since:
        the tenant was removed and added back, or Redis lost its data). Kept for `monitor status`."""
        return f"{self.base}:logrestarts"

    # -- delta and sweep state --------------------------------------------------------------
    def delta_link(self, resource: str) -> str:
        """HASH {link, saved_at}: the deltaLink of the last completed round.

        No TTL: Graph expires directory delta tokens after 7 days (docs/graph.md 8) and answers
        410/syncStateNotFound, which starts a full round; keeping a stale link costs nothing.
        """
        return f"{self.base}:delta:{resource}"

    def round_seen(self, source: str) -> str:
        """SET of object refs read by the full round in progress (deletion by absence at its end).

        Expires after a day so that an abandoned round leaves nothing behind; a round restarts
        from its first page and clears it anyway.
        """
        return f"{self.base}:round:{source}:seen"

    ROUND_SEEN_TTL = 86400

    def sweep_units(self, source: str, bucket: int) -> str:
        """HASH unit id (16 hex digits) -> the unit's record: 8 bytes of digest of what Graph said about
        one object (with what its mapping also read), then the 8-byte refs of the objects it mapped to
        (`monitor.sources.intune_units`). One of `SWEEP_UNIT_BUCKETS` hashes per sweep pass, so
        each stays small enough for Redis's compact hash encoding."""
        return f"{self.base}:units:{source}:{bucket}"

    def sweep_unit_buckets(self, source: str) -> str:
        """SET of the buckets of `sweep_units(source, ...)` that hold records (to visit when pruning)."""
        return f"{self.base}:units:{source}"

    def sweep_units_complete(self, source: str) -> str:
        """STRING, present once a complete pass has left every object it owns with a unit record (the
        first sweep, or the first with records after an upgrade): from then on a sweep reads for
        deletions only the scopes owed a scan (`sweep_scan_owed`), and none when no unit went or
        dropped an object. Named anew (`unitsok2`) when the records' refs changed layout (they carry
        their scope's bucket), so that records of the earlier layout are not taken for complete. Not
        named anew when the prefix came to name the scope's family and kind as well: a record of the
        bucket-only layout still names the buckets of its objects, which owe that bucket of every
        family a scan (`intune_units.owes_scan`), so it is complete all the same."""
        return f"{self.base}:unitsok2:{source}"

    def sweep_scan_owed(self, source: str) -> str:
        """SET of the mirror scopes the next scan for absent objects of `source` must read whole: `*` for
        every scope, added in the same script or commit as the change that may leave an object behind
        where the pass's records are not known to be complete (a unit record dropped, or rewritten
        naming fewer objects). The members a scan read are removed after it when no pass of its sweep
        failed; so a sweep killed in between still owes the scan to the next one
        (`monitor.sources.intune_sweep`). Earlier versions also owed scopes here by their seen refs'
        prefix as a decimal number (`intune_units.scope_prefix`; one below 4,096 is a bucket number and
        stands for that bucket of every family); such members are still read. Now the objects
        themselves are owed (`sweep_owed_refs`)."""
        return f"{self.base}:owed:{source}"

    def sweep_owed_refs(self, source: str) -> str:
        """SET of the 8-byte seen refs (`intune_units.seen_ref`) of the objects the next check for absent
        objects of `source` must look for: those of a unit that went (added by the prune that drops its
        record) or that a unit no longer maps to (added in the page commit that rewrites its record).
        The check reads only the scopes where one of them was seen by no complete pass, and looks there
        for those refs alone; the members read are removed after a check in which no pass failed, so a
        sweep killed before it leaves them owed (`monitor.sources.intune_sweep`). Before refs were owed,
        their scopes were (`sweep_scan_owed`)."""
        return f"{self.base}:owedrefs:{source}"

    def sweep_pages(self, source: str, generation: str) -> str:
        """HASH page digest (16 bytes) -> a page record: the number of units of one part of a list page
        that have a unit record (4 bytes), their unit ids (8 bytes each), then the 8-byte refs of every
        object they mapped to (`monitor.sources.intune_units`, "Page records"). Generation `current` is
        written by the pass in progress; `previous` holds what the last pass left, read once; `gone`,
        what the pass did not find of it, until its prune has read it. Named anew (`pages2`) when the
        records came to name their units: records of the earlier layout (`earlier_sweep_pages`) are
        refs alone, and are never read."""
        return f"{self.base}:pages2:{source}:{generation}"

    def earlier_sweep_pages(self, source: str) -> tuple[str, str]:
        """The page records of the layout before `sweep_pages` named units (refs alone): deleted unread
        when the pass starts its pages."""
        return f"{self.base}:pages:{source}:current", f"{self.base}:pages:{source}:previous"

    def sweep_pages_complete(self, source: str) -> str:
        """STRING, present while every unit record of the pass `source` is named by one of its `current`
        page records (`sweep_pages`): then the units that went since are all named by the records a pass
        does not find again, and its prune reads only those (`intune_sweep.prune_pages`). Deleted as a
        pass starts its pages and set again as its records are complete: after a pass that found every
        record, after a first sweep's, or after its prune."""
        return f"{self.base}:pagesok:{source}"

    # 1,000,000 units (the detected applications of 100,000 devices) -> ~60 a hash: far under the 512
    # entries of Redis's default `hash-max-listpack-entries` (and a listpack is searched end to end).
    SWEEP_UNIT_BUCKETS = 16384

    @property
    def intune_incremental_mark(self) -> str:
        """HASH {devices, audit} -> ISO time: the high-water marks of the incremental Intune pass
        (`monitor.sources.intune_live`), written only after everything read up to them is committed."""
        return f"{self.base}:intunelive:mark"

    def source_status(self, source: str) -> str:
        """HASH: the last round of a source (when, what kind, counts, error)."""
        return f"{self.base}:status:{source}"

    @property
    def permissions(self) -> str:
        """HASH permission name -> JSON {granted, needed_for, checked_at, detail}."""
        return f"{self.base}:permissions"

    @property
    def subscriptions(self) -> str:
        """HASH subscription id -> JSON {resource, clientState, expiration, notificationUrl, ...}
        (`monitor.records.SubscriptionRecord`, read and written only through its codec there).

        Also holds `pending:<resource>` -> the clientState of a create in flight, written before
        the create call, so a subscription whose creation response was lost can be adopted.
        The webhook reads the clientState here to check each notification.
        """
        return f"{self.base}:subscriptions"

    def lease(self, source: str) -> str:
        """STRING holding the owner token of the (tenant, source) runner lease; PX-expiring."""
        return f"{self.base}:lease:{source}"

    @property
    def lease_patterns(self) -> tuple[str, str]:
        """SCAN MATCH patterns of the tenant's runner and publisher leases: while one exists, a job of
        the tenant is running somewhere (tenant removal waits for them)."""
        return (f"{self.base}:lease:*", f"{self.base}:j1:lease:*")

    # -- JupiterOne publishing --------------------------------------------------------------
    @property
    def dirty(self) -> str:
        """HASH scope id -> seq of the scope's last change; the entry is removed once an upload of
        the scope is confirmed, and only if the value is still the one the upload started from."""
        return f"{self.base}:dirty"

    def j1_lease(self, upload_scope: str) -> str:
        """STRING holding the owner token of the (tenant, upload scope) publisher lease; PX-expiring.

        One publisher process at a time uploads a scope (`monitor.sinks.jupiterone`). The TTL is the
        publisher's lease TTL, renewed while it works, so a crashed publisher frees the scope soon.
        """
        return f"{self.base}:j1:lease:{upload_scope}"

    @property
    def j1_state(self) -> str:
        """HASH: the tenant's publishing state for `monitor status` (last success, last error, last job)."""
        return f"{self.base}:j1:state"

    @property
    def j1_inflight(self) -> str:
        """HASH upload scope -> JSON {job, mode, j1_scope, started_at}: jobs being uploaded or finalized right now.

        Entries are removed when the job ends; one left by a crashed publisher stays until the next
        upload of that scope aborts its job (status shows its start time, so a stale entry is
        recognisable).
        """
        return f"{self.base}:j1:inflight"

    @property
    def j1_errors(self) -> str:
        """LIST of JSON errors, newest first, trimmed to `J1_ERRORS_KEPT` (offending key, rule, message)."""
        return f"{self.base}:j1:errors"

    J1_ERRORS_KEPT = 50

    @property
    def j1_rejected(self) -> str:
        """HASH upload scope -> JSON list of {key, rule, detail}: objects left out of its last upload.

        Replaced on every confirmed upload of the scope, so it always says what JupiterOne lacks.
        """
        return f"{self.base}:j1:rejected"

    @property
    def j1_backoff(self) -> str:
        """HASH upload scope -> JSON {counters, attempts, until, reason, message}: a scope JupiterOne
        did not take (a 4xx for its request, a job ending with error counters or in an error status).

        The publisher leaves it dirty and tries again at `until` (growing with `attempts`), or at once
        when `counters` (its dirty counters when it failed) move: a new change, or `monitor reconcile`.
        Removed when an upload of the scope is confirmed.
        """
        return f"{self.base}:j1:backoff"

    @property
    def j1_reconcile(self) -> str:
        """STRING: JSON of the last reconciliation with JupiterOne (`monitor reconcile`, the daily
        job): when, whether it only checked, the drift found per type, what it cost, any error."""
        return f"{self.base}:j1:reconcile"

    @property
    def metrics(self) -> str:
        """HASH metric name (with labels) -> counter, shared by every process of the deployment."""
        return f"{self.base}:metrics"

    @property
    def recent_alerts(self) -> str:
        """LIST of JSON alerts, newest first, trimmed to `RECENT_ALERTS_KEPT`: what the status page
        shows as recent alerts (the destinations hold the full history)."""
        return f"{self.base}:alerts:recent"

    RECENT_ALERTS_KEPT = 20

    # -- effective membership (monitor.effective) ---------------------------------------------
    @property
    def nesting(self) -> str:
        """HASH group id -> JSON {"p": [groups it is a member of], "c": [groups that are its members]}:
        the group-in-group edges of the mirror, as of the effective-membership cursor
        (`sink_cursor(EFFECTIVE_CURSOR)`), written together with it (`ADVANCE_NESTING`). Only groups
        that take part in nesting have a field, so it costs Redis memory per nested edge, not per
        membership; a group's own members are in its relationship scope."""
        return f"{self.base}:nesting"

    # -- who made a change (monitor.actors) ---------------------------------------------------
    @property
    def actors_pending(self) -> str:
        """HASH alert id -> JSON {alert, cause, deadline}: alerts sent with `actorStatus: pending`
        whose update (the actor, or "unknown" after `MONITOR_ACTOR_WAIT`) has not gone out yet."""
        return f"{self.base}:actors:pending"

    def audit_pair(self, group: str, member: str) -> str:
        """HASH audit entry id -> JSON {at, event, group, actor}: the membership entries of the
        directory audit log read for (group, member); one field per entry id, so a re-read adds
        nothing. Expires `MONITOR_ACTOR_WAIT` and the matching window after its last write."""
        return f"{self.base}:audit:pair:{group}|{member}"

    @property
    def audit_state(self) -> str:
        """HASH per audit activity: `hwm:<activity>` the newest `activityDateTime` read through (ISO),
        `behind:<activity>` "1" while a bounded read has not caught up."""
        return f"{self.base}:audit:state"


# -- keys shared by all tenants ---------------------------------------------------------------
GLOBAL_METRICS = f"{NAMESPACE}:{{global}}:metrics"

# STREAM of hints (notifications, timers, lifecycle events) for the workers' consumer group.
# Workers acknowledge *and delete* an entry once its job has committed, so the stream holds only
# work not yet done and needs no trimming (trimming could drop un-acknowledged work).
HINTS = f"{NAMESPACE}:{{hints}}:stream"
HINTS_GROUP = "workers"

# STRING: the scheduler leader lease (only the holder enqueues timer jobs).
SCHEDULER_LEADER = f"{NAMESPACE}:{{scheduler}}:leader"


def worker_heartbeat(worker: str) -> str:
    """STRING with a TTL: a live worker refreshes it; `monitor status` lists the live ones."""
    return f"{NAMESPACE}:{{workers}}:heartbeat:{worker}"


WORKER_HEARTBEAT_PATTERN = f"{NAMESPACE}:{{workers}}:heartbeat:*"


def worker_of_heartbeat(key: str) -> str:
    """The worker name in a key of `worker_heartbeat` (as `WORKER_HEARTBEAT_PATTERN` finds them)."""
    return key.removeprefix(WORKER_HEARTBEAT_PATTERN[:-1])


WORKER_HEARTBEAT_TTL = 30

# HASH tenant id -> JSON of its `TenantConfig`: the tenants registered at run time (admin consent
# onboarding, `monitor tenants add`), next to those of MONITOR_TENANT_ID / MONITOR_TENANTS_FILE.
TENANTS_REGISTRY = f"{NAMESPACE}:{{tenants}}:registry"
# STRING counter, incremented in the same MULTI as every change of the registry (same hash tag, so
# also on Redis Cluster): a process compares it (one GET) before re-reading the registry.
TENANTS_VERSION = f"{NAMESPACE}:{{tenants}}:version"


def onboard_state(state: str) -> str:
    """STRING with a TTL: an admin-consent `state` handed out by `GET /onboard`, holding JSON
    {binding (SHA-256 of the operator's browser cookie), created_at, tenant options}.

    Single use (the callback takes it with GETDEL) and short-lived (`MONITOR_ONBOARD_STATE_TTL`), so a
    stolen or replayed callback URL is refused.
    """
    return f"{NAMESPACE}:{{onboard}}:state:{state}"


# -- Lua scripts ---------------------------------------------------------------------------------

# Release a lease only if we still hold it.
# KEYS[1] = the lease key; ARGV[1] = our owner token. Returns 1 if released, 0 otherwise.
RELEASE_LEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

# Extend a lease only if we still hold it.
# KEYS[1] = the lease key; ARGV[1] = our owner token; ARGV[2] = new time-to-live in ms.
# Returns 1 if extended, 0 if the lease is gone or held by someone else.
RENEW_LEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""

# A write fenced by a lease (monitor.leases): applied only while the lease holds the writer's token.
# KEYS[1] = the lease key; KEYS[2] = the key written. ARGV[1] = the token; ARGV[2] = the command, one
# of SET, HSET or DEL (the only ones the store sends); ARGV[3..] = its arguments after the key.
# Returns -2 if the lease is not the writer's (nothing written), else 1.
FENCED_WRITE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return -2 end
redis.call(ARGV[2], KEYS[2], unpack(ARGV, 3))
return 1
"""

# Move a sink's cursor, and with it forget that the sink was failing: a cursor that moves means the
# sink took a batch. Fenced by the deliverer's lease when KEYS[3] and ARGV[2] are given.
# KEYS[1] = TenantKeys.sink_cursor(sink); KEYS[2] = TenantKeys.sink_state(sink); KEYS[3] = the lease.
# ARGV[1] = the new cursor; ARGV[2] = the lease token. Returns -2 if the lease is not ours, else 1.
ADVANCE_CURSOR = """
if ARGV[2] and redis.call('get', KEYS[3]) ~= ARGV[2] then return -2 end
redis.call('set', KEYS[1], ARGV[1])
redis.call('del', KEYS[2])
return 1
"""

# Clear an upload scope's dirty entries (its entity and relationship mirror scopes) that nothing
# changed since the publisher's snapshot, and only while the publisher still holds the scope's lease
# (so a publisher whose lease expired and was taken over cannot clear a counter the new holder is
# working on).
# KEYS[1] = TenantKeys.dirty; KEYS[2] = TenantKeys.j1_lease(upload scope).
# ARGV[1] = lease token; then pairs (mirror scope id, the counter snapshotted before reading the
#   mirror, or "" for a scope that was not dirty).
# Returns the number of entries cleared; 0 as well when the lease is not ours. An entry whose
# counter moved meanwhile stays: the scope is published again.
CLEAR_DIRTY_IF_UNCHANGED = """
if redis.call('get', KEYS[2]) ~= ARGV[1] then return 0 end
local cleared = 0
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] ~= '' and redis.call('hget', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    cleared = cleared + redis.call('hdel', KEYS[1], ARGV[i])
  end
end
return cleared
"""

# Move the effective-membership cursor and the nesting index together, so the index always describes
# the log at the cursor (monitor.effective).
# KEYS[1] = the cursor (TenantKeys.sink_cursor); KEYS[2] = TenantKeys.nesting.
# ARGV[1] = the cursor the evaluation started from ("" when it had none); ARGV[2] = the new cursor;
# ARGV[3] = a JSON object: group id -> new field value, or "" to delete the field.
# Returns 1, or 0 (and writes nothing) when the cursor is not what the evaluation started from.
ADVANCE_NESTING = """
if (redis.call('get', KEYS[1]) or '') ~= ARGV[1] then return 0 end
for group, value in pairs(cjson.decode(ARGV[3])) do
  if value == '' then redis.call('hdel', KEYS[2], group) else redis.call('hset', KEYS[2], group, value) end
end
redis.call('set', KEYS[1], ARGV[2])
return 1
"""

# Read a page's objects and the versions of their scopes in one round trip.
# KEYS[1] = the scope versions hash; KEYS[2..] = mirror hashes.
# ARGV[1] = a JSON array: the number of scope ids S, the S scope ids, then for each mirror hash
#   its KEYS index, the number of fields F and the F field lengths.
# ARGV[2] = the fields, one after another (mirror fields are bytes: `monitor.mirror_codec`).
# Returns the S versions (false when a scope was never written), then every field's value in order
# (false when absent).
# (Arguments travel as two strings: a page has thousands of them, and one string costs the client a
# fraction of what thousands of separately encoded arguments do.)
READ_PAGE = """
local a = cjson.decode(ARGV[1])
local names = ARGV[2]
local out = redis.call('HMGET', KEYS[1], unpack(a, 2, a[1] + 1))
local i = a[1] + 2
local at = 1
while i <= #a do
  local count, fields = a[i + 1], {}
  for k = 1, count do
    local size = a[i + 1 + k]
    fields[k] = string.sub(names, at, at + size - 1)
    at = at + size
  end
  local values = redis.call('HMGET', KEYS[a[i]], unpack(fields))
  for k = 1, count do out[#out + 1] = values[k] end
  i = i + 2 + count
end
return out
"""

# The memberships of some members, read from the membership scopes without sending every key to
# the client (a membership is anchored on its group, so the memberships *of a member* are spread
# over every scope of its groups; see monitor.sources.parking for why this is a scan).
# KEYS = membership scope hashes. ARGV[1] = a JSON array of the lengths of the wanted member ids in
# ARGV[2], one after another, each in both forms a field may hold it (packed and as text,
# `monitor.mirror_codec`); ARGV[3], ARGV[4] = a key prefix to skip, as text and packed ("account
# HAS group" relationships share the scopes).
# A field is `<group>|has|<member>`; the packed UUIDs at its start (0xFF and 16 raw bytes) are
# skipped before looking for `|has|`, so raw bytes cannot be taken for it.
# Returns a flat array: field, value of every field with a wanted member.
FIND_MEMBERSHIPS = """
local wanted, at = {}, 1
for _, size in ipairs(cjson.decode(ARGV[1])) do
  wanted[string.sub(ARGV[2], at, at + size - 1)] = true
  at = at + size
end
local skips = {ARGV[3], ARGV[4]}
local function skipped(field)
  for _, skip in ipairs(skips) do
    if #skip > 0 and string.sub(field, 1, #skip) == skip then return true end
  end
  return false
end
local out = {}
for k = 1, #KEYS do
  local hits = {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[k])) do
    local from = 1
    while string.byte(field, from) == 255 do from = from + 17 end
    local _, stop = string.find(field, '|has|', from, true)
    if stop and wanted[string.sub(field, stop + 1)] and not skipped(field) then
      hits[#hits + 1] = field
    end
  end
  if #hits > 0 then
    local values = redis.call('HMGET', KEYS[k], unpack(hits))
    for i = 1, #hits do out[#out + 1] = hits[i]; out[#out + 1] = values[i] end
  end
end
return out
"""

# Commit one page atomically: verify, write the mirror and bookkeeping, append the change records.
# KEYS[1] = the sequence counter; KEYS[2] = the change-log stream; KEYS[3] = the scope versions
#   hash; KEYS[4..] = every other key the page touches, referenced by index. A fenced commit (one
#   run per tenant and source, monitor.leases) has the runner's lease as KEYS[4] and its token as
#   ARGV[4]: unless the lease still holds that token, nothing is written and -2 is returned, so a
#   runner that stalled past its lease cannot overwrite the newer state its successor committed.
# ARGV[2] = a blob of mirror values and fields, referenced by (offset, length).
# ARGV[3] = the page's change records, one JSON object per line, without their seq, zstd-compressed.
# ARGV[1] = a JSON array: the number of change records N, the number of checks C, then C pairs
#   (scope id, expected version, "" for never written or "*" for not checked): if a scope the page
#   writes was written by anyone since the page read it, nothing is written and -1 is returned (the
#   page is read again and recomputed). Then the number of absence checks A, then A groups
#   (KEYS index k, n, (offset length)*n): if hash KEYS[k] has any of those n fields (read from ARGV[2]),
#   nothing is written and -1 is returned (a page written without reading, its objects taken to
#   be absent). Then commands, each a code, a KEYS index and its arguments:
#     H k n (field offset length)*n   HSET the n fields to their values in ARGV[2]
#     F k n (offset flen vlen)*n      HSET n fields read from ARGV[2] at offset, each followed by
#                                     its value (mirror fields are bytes)
#     X k n (offset length)*n         HDEL n fields read from ARGV[2]
#     M k n size offset               SADD n members of `size` bytes read from ARGV[2] at offset
#     D k n field*n                   HDEL            S k n member*n   SADD
#     R k n member*n                  SREM            I k field by     HINCRBY
#     E k seconds                     EXPIRE          V k n field*n    HSET each field to the
#                                                                      page's last seq
# Every scope the page writes gets the page's last seq as its new version. The records get the
# next N sequence numbers and are appended as one stream entry with id "<last seq>-0" and fields
# first (the first seq), n (N) and s (ARGV[3], verbatim).
# Returns the seq before the page's first record, -1 on conflict, or -2 when the lease is lost.
COMMIT_PAGE = """
if ARGV[4] and redis.call('GET', KEYS[4]) ~= ARGV[4] then return -2 end
local a = cjson.decode(ARGV[1])
local blob = ARGV[2]
local n = a[1]
local i = 3
local written = {}
for _ = 1, a[2] do
  if a[i + 1] ~= '*' and (redis.call('HGET', KEYS[3], a[i]) or '') ~= a[i + 1] then return -1 end
  written[#written + 1] = a[i]
  i = i + 2
end
local groups = a[i]
i = i + 1
for _ = 1, groups do
  local key, count = KEYS[a[i]], a[i + 1]
  for k = 0, count - 1 do
    local at = i + 2 + 2 * k
    if redis.call('HEXISTS', key, string.sub(blob, a[at] + 1, a[at] + a[at + 1])) == 1 then return -1 end
  end
  i = i + 2 + 2 * count
end
local base = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = base + n
while i <= #a do
  local code, key = a[i], KEYS[a[i + 1]]
  if code == 'H' then
    local count, args = a[i + 2], {}
    for k = 0, count - 1 do
      local at = i + 3 + 3 * k
      args[2 * k + 1] = a[at]
      args[2 * k + 2] = string.sub(blob, a[at + 1] + 1, a[at + 1] + a[at + 2])
    end
    redis.call('HSET', key, unpack(args))
    i = i + 3 + 3 * count
  elseif code == 'F' then
    local count, args = a[i + 2], {}
    for k = 0, count - 1 do
      local at = i + 3 + 3 * k
      local start, size = a[at] + 1, a[at + 1]
      args[2 * k + 1] = string.sub(blob, start, start + size - 1)
      args[2 * k + 2] = string.sub(blob, start + size, start + size + a[at + 2] - 1)
    end
    redis.call('HSET', key, unpack(args))
    i = i + 3 + 3 * count
  elseif code == 'X' then
    local count, args = a[i + 2], {}
    for k = 0, count - 1 do
      local at = i + 3 + 2 * k
      args[k + 1] = string.sub(blob, a[at] + 1, a[at] + a[at + 1])
    end
    redis.call('HDEL', key, unpack(args))
    i = i + 3 + 2 * count
  elseif code == 'V' then
    local count, args = a[i + 2], {}
    for k = 0, count - 1 do args[2 * k + 1] = a[i + 3 + k]; args[2 * k + 2] = last end
    redis.call('HSET', key, unpack(args))
    i = i + 3 + count
  elseif code == 'D' or code == 'S' or code == 'R' then
    local command = ({D = 'HDEL', S = 'SADD', R = 'SREM'})[code]
    redis.call(command, key, unpack(a, i + 3, i + 2 + a[i + 2]))
    i = i + 3 + a[i + 2]
  elseif code == 'M' then
    local count, size, args = a[i + 2], a[i + 3], {}
    for k = 0, count - 1 do args[k + 1] = string.sub(blob, a[i + 4] + k * size + 1, a[i + 4] + (k + 1) * size) end
    redis.call('SADD', key, unpack(args))
    i = i + 5
  elseif code == 'I' then redis.call('HINCRBY', key, a[i + 2], a[i + 3]); i = i + 4
  elseif code == 'E' then redis.call('EXPIRE', key, a[i + 2]); i = i + 3
  else return redis.error_reply('COMMIT_PAGE: unknown command ' .. tostring(code)) end
end
for k = 1, #written do redis.call('HSET', KEYS[3], written[k], last) end
if n > 0 then
  redis.call('XADD', KEYS[2], last .. '-0', 'first', base + 1, 'n', n, 's', ARGV[3])
  redis.call('SET', KEYS[1], last)
end
return base
"""
