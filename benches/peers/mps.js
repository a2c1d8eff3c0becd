#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// The matrix-protection-suite peer of prr's cold-build benchmark (issue 6, W1).
//
// Reads the workload files that `prr ingest` reads (JSON arrays of state events, and a manifest
// `{"instances": [...]}`) and builds the revisions the way Draupnir does, from scratch:
//   1. one policy room revision per watched policy room (StandardPolicyRoomRevision);
//   2. one room membership revision per protected room (StandardRoomMembershipRevision);
//   3. per instance: its policy list revision (the watched rooms' rules, aggregated like
//      previewIncorperationOfRevision), its set membership revision (its protected rooms), the
//      members matching policies (StandardSetMembershipPolicyRevision), the member-ban intent
//      (StandardMemberBanIntentProjectionNode) and the server-ban intent with its compiled ACL
//      (StandardServerBanIntentProjectionNode, compileServerACL).
// Rooms' revisions are shared by the instances (one issuer per room in a draupnir4all
// process); everything per instance is per instance.
//
// Modes:
//   --mode draupnir  matching as Draupnir does it: changesFromInitialRevisions, which asks
//                    allRulesMatchingEntity without a recommendation (a scan of every rule of
//                    the type for every member);
//   --mode scoped    best case: the same matches for ban and takedown rules only, asked with a
//                    recommendation (the scoped literal map plus a scan of the globs), the user
//                    ID for user rules and the server name for server rules.
//   --mode w3        issue 6's W3 (policy fan-out), used by `benches/src/bin/fanout/main.rs`: builds
//                    every instance's revisions and intents as Draupnir does (untimed; with
//                    `--setup scoped` the initial member matches come from the scoped lookups,
//                    see runW3), then applies each policy change of `--ops FILE` the way
//                    Draupnir propagates it and times it until every instance is updated.
//
// Output: JSON lines on stdout, {"progress": {...}} after each instance and {"result": {...}}
// at the end; times in seconds (performance.now()), memory from /proc/self/status (VmHWM).
"use strict";

const fs = require("fs");
const path = require("path");
const { performance } = require("perf_hooks");
const mps = require("@the-draupnir-project/matrix-protection-suite");
const { MatrixRoomReference, userServerName } = require("@the-draupnir-project/matrix-basic-types");
const { monotonicFactory } = require("ulidx");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function procStatus(field) {
  try {
    const line = fs.readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith(field));
    return line ? Number(line.split(/\s+/)[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const peakRss = () => procStatus("VmHWM:") || process.resourceUsage().maxRSS * 1024;
const secondsSince = (t) => (performance.now() - t) / 1000;

const dir = arg("dir");
const mode = arg("mode", "draupnir");
if (!dir || !["draupnir", "scoped", "w3"].includes(mode)) {
  process.stderr.write("usage: node mps.js --dir DIR [--mode draupnir|scoped|w3 [--ops FILE] [--setup draupnir|scoped]]\n");
  process.exit(2);
}

// ---- read and parse the files (timed separately) ----
const tParse = performance.now();
const roomEvents = new Map(); // room ID -> state events, latest per (type, state_key)
const instances = new Map(); // instance ID -> {watch, protect}
for (const name of fs.readdirSync(dir).sort()) {
  const value = JSON.parse(fs.readFileSync(path.join(dir, name), "utf8"));
  if (Array.isArray(value)) {
    for (const ev of value) {
      if (typeof ev.state_key !== "string") continue;
      if (!roomEvents.has(ev.room_id)) roomEvents.set(ev.room_id, new Map());
      ev.unsigned = ev.unsigned ?? {};
      roomEvents.get(ev.room_id).set(`${ev.type}\u0000${ev.state_key}`, ev);
    }
  } else if (value && Array.isArray(value.instances)) {
    for (const entry of value.instances) {
      if (entry.remove) instances.delete(entry.id);
      else instances.set(entry.id, { watch: [...new Set(entry.watch)], protect: [...new Set(entry.protect)] });
    }
  } else {
    throw new Error(`${name}: not a JSON array of events nor a manifest`);
  }
}
const parseSeconds = secondsSince(tParse);

// ---- the revisions shared by the instances, as Draupnir builds them ----
function stateOf(room) {
  return [...(roomEvents.get(room)?.values() ?? [])];
}

// The policy rooms some instance watches and the rooms some instance protects.
function roomsOfInstances() {
  const watched = new Set();
  const protectedRooms = new Set();
  for (const inst of instances.values()) {
    inst.watch.forEach((r) => watched.add(r));
    inst.protect.forEach((r) => protectedRooms.add(r));
  }
  return { watched, protectedRooms };
}

// One policy room revision per room.
function policyRoomRevisions(rooms) {
  const out = new Map();
  for (const room of rooms) {
    const state = stateOf(room);
    const create = state.find((e) => e.type === "m.room.create" && e.state_key === "");
    const blank = mps.StandardPolicyRoomRevision.blankRevision(MatrixRoomReference.fromRoomID(room, []), create);
    out.set(room, blank.reviseFromState(state));
  }
  return out;
}

// One room membership revision per room.
function roomMembershipRevisions(rooms) {
  const out = new Map();
  for (const room of rooms) {
    const members = stateOf(room).filter((e) => e.type === "m.room.member");
    const blank = mps.StandardRoomMembershipRevision.blankRevision(MatrixRoomReference.fromRoomID(room, []));
    out.set(room, blank.reviseFromMembership(members));
  }
  return out;
}

// An instance's policy list revision: the rules of the rooms it watches.
function policyListOf(inst, policyRooms) {
  const changes = [];
  for (const room of inst.watch) {
    const revision = policyRooms.get(room);
    if (!revision) continue;
    for (const rule of revision.allRules()) {
      changes.push({ changeType: mps.PolicyRuleChangeType.Added, event: rule.sourceEvent, sender: rule.sourceEvent.sender, rule });
    }
  }
  return mps.StandardPolicyListRevision.blankRevision().reviseFromChanges(changes);
}

// An instance's set membership revision: the members of the rooms it protects.
function setMembershipOf(inst, roomMemberships) {
  let set = mps.StandardSetMembershipRevision.blankRevision();
  for (const room of inst.protect) {
    const revision = roomMemberships.get(room);
    if (revision) set = set.reviseFromChanges(set.changesFromAddedRoom(revision));
  }
  return set;
}

if (mode === "w3") {
  runW3();
  process.exit(0);
}

// ---- build ----
const tBuild = performance.now();
const ulid = monotonicFactory();
const { watched, protectedRooms } = roomsOfInstances();
const policyRooms = policyRoomRevisions(watched);
const policyRoomSeconds = secondsSince(tBuild);

const tMembership = performance.now();
const roomMemberships = roomMembershipRevisions(protectedRooms);
const membershipSeconds = secondsSince(tMembership);

function scopedMatches(list, set) {
  const added = [];
  const { PolicyRuleType, Recommendation } = mps;
  for (const member of set.presentMembers()) {
    const server = userServerName(member);
    const rules = [
      ...list.allRulesMatchingEntity(member, { type: PolicyRuleType.User, recommendation: Recommendation.Ban, searchHashedRules: false }),
      ...list.allRulesMatchingEntity(member, { type: PolicyRuleType.User, recommendation: Recommendation.Takedown, searchHashedRules: false }),
      ...list.allRulesMatchingEntity(server, { type: PolicyRuleType.Server, recommendation: Recommendation.Ban, searchHashedRules: false }),
      ...list.allRulesMatchingEntity(server, { type: PolicyRuleType.Server, recommendation: Recommendation.Takedown, searchHashedRules: false }),
    ];
    for (const policy of rules) added.push({ userID: member, policy });
  }
  return { addedMemberMatches: added, removedMemberMatches: [] };
}

const counts = { member_set: 0, member_matches: 0, ban_intents: 0, acl_deny: 0 };
const phase = { list: 0, set: 0, matching: 0, intents: 0 };
let done = 0;
const tInstances = performance.now();
for (const [id, inst] of instances) {
  let t = performance.now();
  const list = policyListOf(inst, policyRooms);
  phase.list += secondsSince(t);

  t = performance.now();
  const set = setMembershipOf(inst, roomMemberships);
  counts.member_set += set.uniqueMemberCount();
  phase.set += secondsSince(t);

  t = performance.now();
  const blank = mps.StandardSetMembershipPolicyRevision.blankRevision();
  const delta = mode === "draupnir" ? blank.changesFromInitialRevisions(list, set) : scopedMatches(list, set);
  const memberPolicies = blank.reviseFromChanges(delta);
  phase.matching += secondsSince(t);

  t = performance.now();
  const banIntent = mps.StandardMemberBanIntentProjectionNode.create(ulid).reduceInitialInputs([memberPolicies]);
  const banned = banIntent.allMembersWithRules();
  counts.member_matches += delta.addedMemberMatches.length;
  counts.ban_intents += banned.length;
  const serverIntent = mps.StandardServerBanIntentProjectionNode.create(ulid).reduceInitialInputs([list]);
  const acl = mps.compileServerACL(userServerName(id), serverIntent).safeAclContent();
  counts.acl_deny += acl.deny.length;
  phase.intents += secondsSince(t);

  done += 1;
  emit({ progress: { instances: done, of: instances.size, elapsed: secondsSince(tBuild), instances_seconds: secondsSince(tInstances), peak_rss: peakRss() } });
}

emit({
  result: {
    mode,
    parse: parseSeconds,
    build: secondsSince(tBuild),
    policy_rooms: policyRoomSeconds,
    room_memberships: membershipSeconds,
    per_instance: phase,
    instances: done,
    counts,
    peak_rss: peakRss(),
    node: process.version,
    mps: require("@the-draupnir-project/matrix-protection-suite/package.json").version,
  },
});

// ---- W3: policy fan-out (issue 6) ----
//
// Draupnir propagates a change of a watched policy room like this (matrix-protection-suite
// 7.1.0, the classes named in brackets):
//   1. the room's state revision takes the new state event and the policy room revision
//      derives the rule changes from it (RoomStatePolicyRoomRevisionIssuer.listener:
//      changesFromState, reviseFromChanges); one per room, shared by every instance;
//   2. each instance's watched-lists revision folds the changes in
//      (StandardDirectPropagationPolicyListRevisionIssuer.handleRevision: reviseFromChanges);
//   3. each instance's member-policy revision derives the match changes against its protected
//      rooms' members (StandardMembershipPolicyRevisionIssuer.policyRevision:
//      changesFromPolicyChanges over setMembershipRevision, reviseFromChanges);
//   4. the intent projections reduce their input and diff the new node against the old one
//      (ProjectionOutputHelper.applyInput): the member-ban intent from the match changes
//      (StandardMemberBanIntentProjectionNode) and the server-ban intent from the rule changes
//      (StandardServerBanIntentProjectionNode); when the server-ban diff is not empty the ACL is
//      compiled (compileServerACL, as ServerACLSynchronisationCapability does per room).
// The clock stops when every instance has done 4. Approximated: the event emitters between
// these steps are replaced by direct calls in the same order (no listeners, no logging), the
// room state revision in front of step 1 is skipped (the event goes straight to
// changesFromState), and nothing is sent to the homeserver (the consequences are not timed, in
// prr either). With `--setup scoped` (used when building the initial state Draupnir's way,
// an O(members x rules) scan, does not fit in the time cap), the initial member-policy
// revision holds the scoped matches (ban and takedown rules; server rules matched on the
// server name) instead of all matches: the untimed starting state differs a little, the
// timed propagation code is the same.
function runW3() {
  const opsFile = arg("ops");
  const setup = arg("setup", "draupnir");
  if (!opsFile || !["draupnir", "scoped"].includes(setup)) {
    process.stderr.write("w3: --ops FILE required, --setup draupnir|scoped\n");
    process.exit(2);
  }
  const ops = fs
    .readFileSync(opsFile, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l));
  for (const op of ops) for (const ev of op.events) ev.unsigned = ev.unsigned ?? {};
  const { PolicyRuleType, Recommendation } = mps;
  const ulid = monotonicFactory();
  const tSetup = performance.now();
  const { watched, protectedRooms } = roomsOfInstances();
  const policyRooms = policyRoomRevisions(watched);
  const roomMemberships = roomMembershipRevisions(protectedRooms);
  const states = [];
  for (const [id, inst] of instances) {
    const list = policyListOf(inst, policyRooms);
    const set = setMembershipOf(inst, roomMemberships);
    const blank = mps.StandardSetMembershipPolicyRevision.blankRevision();
    const delta = setup === "draupnir" ? blank.changesFromInitialRevisions(list, set) : scopedMatches(list, set);
    const memberPolicies = blank.reviseFromChanges(delta);
    const banNode = mps.StandardMemberBanIntentProjectionNode.create(ulid).reduceInitialInputs([memberPolicies]);
    const serverNode = mps.StandardServerBanIntentProjectionNode.create(ulid).reduceInitialInputs([list]);
    const ownServer = userServerName(id);
    const acl = mps.compileServerACL(ownServer, serverNode).safeAclContent();
    states.push({ id, watch: new Set(inst.watch), list, set, memberPolicies, banNode, serverNode, ownServer, acl });
    emit({ progress: { phase: "setup", instances: states.length, of: instances.size, elapsed: secondsSince(tSetup), peak_rss: peakRss() } });
  }
  const setupSeconds = secondsSince(tSetup);

  const latencies = {};
  const changed = {};
  let opIndex = 0;
  for (const op of ops) {
    const t = performance.now();
    let matchesChanged = 0;
    let bansChanged = 0;
    let affected = 0;
    for (const ev of op.events) {
      // 1. the policy room revision (shared).
      const roomRevision = policyRooms.get(ev.room_id);
      if (!roomRevision) continue;
      const changes = roomRevision.changesFromState([ev]);
      if (changes.length === 0) continue;
      policyRooms.set(ev.room_id, roomRevision.reviseFromChanges(changes));
      for (const s of states) {
        if (!s.watch.has(ev.room_id)) continue;
        // 2. the instance's watched-lists revision.
        s.list = s.list.reviseFromChanges(changes);
        // 3. member matches.
        const matchChanges = s.memberPolicies.changesFromPolicyChanges(changes, s.set);
        s.memberPolicies = s.memberPolicies.reviseFromChanges(matchChanges);
        // 4. intents.
        const nextBan = s.banNode.reduceInput(matchChanges);
        const banDiff = s.banNode.diff(nextBan);
        s.banNode = nextBan;
        const nextServer = s.serverNode.reduceInput(changes);
        const serverDiff = s.serverNode.diff(nextServer);
        s.serverNode = nextServer;
        if (serverDiff.deny.length + serverDiff.recall.length > 0) {
          s.acl = mps.compileServerACL(s.ownServer, s.serverNode).safeAclContent();
        }
        const m = matchChanges.addedMemberMatches.length + matchChanges.removedMemberMatches.length;
        matchesChanged += m;
        bansChanged += banDiff.ban.length + banDiff.recall.length;
        if (m > 0) affected += 1;
      }
    }
    const dt = secondsSince(t);
    if (op.timed) {
      (latencies[op.kind] = latencies[op.kind] ?? []).push(dt);
      if (!(op.kind in changed)) changed[op.kind] = { member_matches: matchesChanged, ban_intents: bansChanged, instances: affected };
    }
    opIndex += 1;
    if (opIndex % 10 === 0) emit({ progress: { phase: "ops", ops: opIndex, of: ops.length, peak_rss: peakRss() } });
  }
  emit({
    result: {
      mode: "w3",
      setup_mode: setup,
      parse: parseSeconds,
      setup: setupSeconds,
      instances: states.length,
      latencies,
      changed,
      peak_rss: peakRss(),
      node: process.version,
      mps: require("@the-draupnir-project/matrix-protection-suite/package.json").version,
    },
  });
}
