//! The command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit status: 0 success; 1 the store or runtime failed; 2 bad usage (unknown command, option or
replica); 3 invalid input data (nothing was stored); 4 `check` found problems or
`rebuild --check` found differences; 5 `ingest` committed every source delta (see its summary)
but the revision capture after them failed (the next capture retries it).

Examples:
  prr ingest examples/data/real/derived/chitchat_matrix-spec_state.json examples/data/demo
  prr show member_bans
  prr status --format json";

/// prr, the Persistent Replica Runtime: incremental, persistent moderation replicas for
/// Matrix bots (Draupnir). Ingest exported room state and instance manifests; query policy
/// lists, members matching policies, and the bans and server ACLs each instance intends.
#[derive(Debug, Parser)]
#[command(name = "prr", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The store file.
    #[arg(
        long,
        global = true,
        env = "PRR_STORE",
        default_value = "prr.redb",
        value_name = "PATH"
    )]
    pub store: PathBuf,
    /// Timely worker threads (at most the number of cores is wise; more than 4 per core is
    /// refused).
    #[arg(long, global = true, default_value_t = 1, value_name = "N")]
    pub workers: usize,
    /// Capture revisions every N source deltas (besides `compact` and the end of each command).
    #[arg(long, global = true, value_name = "N")]
    pub revision_every: Option<u64>,
    /// How many revisions of each replica to keep for time travel (at least 1).
    #[arg(long, global = true, default_value_t = 2, value_name = "N")]
    pub keep_revisions: usize,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of `show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// Aligned columns (the default on a terminal).
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line (the default otherwise).
    Ndjson,
}

/// What `prr enact --only` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnactOnly {
    /// `member_bans`: bans.
    Bans,
    /// `server_acl`: server ACLs.
    Acl,
}

/// Output formats of `deltas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeltasFormat {
    /// One `{"seq", "diff", "record"}` object per line.
    Ndjson,
    /// Aligned columns.
    Table,
}

/// The checks at the door of `prr check`.
#[derive(Clone, Debug, Subcommand)]
pub enum DoorCheck {
    /// May USER join ROOM?
    Join {
        /// The user ID.
        user: String,
        /// The room ID.
        room: String,
    },
    /// May INVITER invite INVITEE into ROOM? (Refused when either is refused.)
    Invite {
        /// The inviting user.
        inviter: String,
        /// The invited user.
        invitee: String,
        /// The room ID.
        room: String,
    },
    /// May USER send into ROOM?
    Sender {
        /// The user ID.
        user: String,
        /// The room ID.
        room: String,
    },
}

/// Output formats of `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    /// Lines for people (the default on a terminal).
    Text,
    /// One JSON object (the default otherwise).
    Json,
}

/// Output formats of `status` and `revisions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InfoFormat {
    /// Human-readable.
    Table,
    /// A JSON object.
    Json,
}

/// Output formats of `graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz.
    Dot,
    /// Mermaid.
    Mermaid,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest files: each one atomic source delta, in the order given.
    ///
    /// A file is room state (a JSON array of events, `{"state": [...]}`, `{"room_id", "events"}`,
    /// or one event per line) or an instance manifest (`{"instances": [...]}`). A directory
    /// stands for its files, sorted by name; `-` reads standard input. Every file is checked
    /// before anything is stored: if one is invalid, nothing is stored. If storing fails (a
    /// full disk, an I/O error), the error says which files are committed, with their seqs,
    /// and which are not (ingest those again).
    #[command(
        after_help = concat!(
            "Examples:\n",
            "  prr ingest examples/data/real/derived/chitchat_matrix-spec_state.json \\\n",
            "    examples/data/demo/30-manifest.json\n",
            "  prr ingest examples/data/demo/\n",
            "  cat examples/data/demo/20-demo-room.json | prr ingest -",
        )
    )]
    Ingest {
        /// Files, directories, or `-` for standard input.
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
    },
    /// Show what ingesting files would change, without storing anything.
    ///
    /// The files are read and validated as `prr ingest` reads them (each its own source
    /// delta); the output is the deltas the ingest would cause, per replica (records carry
    /// their instance): the lines `prr deltas REPLICA` prints after the same ingest, each
    /// with its `replica`. The store is not changed.
    #[command(
        after_help = "Examples:\n  prr preview examples/data/demo/30-manifest.json\n  prr preview examples/data/demo --emit member_bans,server_acl --format table"
    )]
    Preview {
        /// Files, directories, or `-` for standard input.
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
        /// Replicas whose deltas to show (comma-separated) [default: every replica but the
        /// views].
        #[arg(long, value_delimiter = ',', value_name = "REPLICA,...")]
        emit: Vec<String>,
        /// Output format [default: table on a terminal, ndjson otherwise].
        #[arg(long, value_enum)]
        format: Option<ShowFormat>,
    },
    /// Explain why an instance bans a user (or does not), or what its server ACL holds.
    ///
    /// For a user: the protected rooms with the user's membership and the ban intended there;
    /// every rule of the instance's lists that matches the user (present or not), with its
    /// effect; the rule the bans cite and why; a verdict. With `--acl`: each denied server with
    /// its rules, the server rules left out (the instance's own server, hashed rules), and per
    /// protected room whether its ACL is in sync and what differs.
    #[command(
        after_help = "Examples:\n  prr explain @draupnir:example.org @spam2:chat.spam.example\n  prr explain @draupnir:example.org @alice:example.org --room '!demo-room:example.org' --format json\n  prr explain @draupnir:example.org --acl"
    )]
    Explain {
        /// The instance (its user ID).
        instance: String,
        /// The user to explain (not with --acl).
        #[arg(required_unless_present = "acl", conflicts_with = "acl")]
        user: Option<String>,
        /// Only this protected room.
        #[arg(long, value_name = "ROOM", conflicts_with = "acl")]
        room: Option<String>,
        /// Explain the instance's server ACL instead.
        #[arg(long)]
        acl: bool,
        /// Output format [default: text on a terminal, json otherwise].
        #[arg(long, value_enum)]
        format: Option<ExplainFormat>,
    },
    /// Print a replica's records, sorted by key (or, `prr show poisoned`, the quarantined
    /// source deltas).
    #[command(
        after_help = "Examples:\n  prr show member_bans\n  prr show room_members --partition '!demo-room:example.org' --format json\n  prr show server_acl --as-of 3\n  prr show poisoned"
    )]
    Show {
        /// The replica (see `prr graph`), or `poisoned`: the source deltas quarantined because
        /// a replica's computation panicked on them (seq, time, message).
        replica: String,
        /// Only this partition (a room ID or an instance ID, per the replica).
        #[arg(long, value_name = "KEY")]
        partition: Option<String>,
        /// As of an earlier sequence number (time travel over retained history).
        #[arg(long, value_name = "SEQ")]
        as_of: Option<u64>,
        /// Output format [default: table on a terminal, ndjson otherwise].
        #[arg(long, value_enum)]
        format: Option<ShowFormat>,
    },
    /// Print a replica's deltas after a sequence number, in order.
    #[command(
        after_help = "Examples:\n  prr deltas member_bans\n  prr deltas policy_list --since 2"
    )]
    Deltas {
        /// The replica.
        replica: String,
        /// Only deltas at sequence numbers greater than this.
        #[arg(long, default_value_t = 0, value_name = "SEQ")]
        since: u64,
        /// Output format.
        #[arg(long, value_enum, default_value = "ndjson")]
        format: DeltasFormat,
    },
    /// Show the store: current seq, replicas (frontier, records, revisions), log, size.
    #[command(after_help = "Examples:\n  prr status\n  prr status --format json | jq .seq")]
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: InfoFormat,
    },
    /// List stored revisions.
    #[command(after_help = "Examples:\n  prr revisions\n  prr revisions member_bans --format json")]
    Revisions {
        /// Only this replica's.
        replica: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: InfoFormat,
    },
    /// Capture revisions now, collect garbage (old revisions, the log before them, dictionary strings nothing uses), and shrink the file.
    #[command(after_help = "Example:\n  prr compact")]
    Compact,
    /// Recompute replicas from the source log and compare with (or replace) stored revisions.
    ///
    /// The whole log is verified first: an entry that fails its checksum or does not decode is
    /// an error naming it, and no revision is replaced. A revision that fails its checksums or
    /// does not decode is reported as damaged, and replaced by the recomputation.
    #[command(
        after_help = "Examples:\n  prr rebuild --check\n  prr rebuild member_matches member_bans"
    )]
    Rebuild {
        /// Replicas to rebuild (all if none).
        replicas: Vec<String>,
        /// Only compare; exit 4 on a difference.
        #[arg(long)]
        check: bool,
    },
    /// Drop a quarantined (poisoned) source delta for good: it is never replayed.
    ///
    /// A source delta that a replica's computation panicked on is quarantined: the replicas
    /// stay as if it never came, and `prr status` and `prr show poisoned` list it. This drops
    /// it: its log entry becomes an empty delta. An unknown SEQ is an error (exit 1).
    #[command(
        name = "ack-poisoned",
        after_help = "Examples:\n  prr show poisoned\n  prr show poisoned --format json | jq -r '.[].seq' | xargs -r -n1 prr ack-poisoned"
    )]
    AckPoisoned {
        /// The quarantined delta's sequence number (see `prr show poisoned`).
        #[arg(value_name = "SEQ")]
        seq: u64,
    },
    /// Verify the store's integrity.
    ///
    /// Verifies every checksum (log entries, dictionary, revision headers and chunks, metadata)
    /// and every invariant of the store's format (docs/design.md), and that every entry decodes
    /// with dictionary ids in range; prints each problem with its table and entry, and exits 4
    /// when there is one.
    ///
    /// With `join`, `invite` or `sender`: whether an instance protecting the room refuses the
    /// user at the door (a ban or takedown rule of a list it watches matches the user or the
    /// user's server): `{"allow": true}`, or `{"allow": false, "instance", "rule", "user_id"}`
    /// with the rule `member_bans` would choose. Answered from an index of the rules.
    #[command(
        after_help = "Examples:\n  prr check\n  prr check join @spammer1:spam.example '!demo-room:example.org'\n  prr check invite @alice:example.org @troll:troll.example '!demo-room:example.org'\n  prr check sender @bob:example.org '!demo-room:example.org'"
    )]
    Check {
        /// A check at the door instead of the store's integrity.
        #[command(subcommand)]
        door: Option<DoorCheck>,
    },
    /// Embedded streaming: NDJSON events or manifests in, replica deltas out.
    ///
    /// Lines that arrive together form one source delta; each is committed durably before its
    /// deltas are written. A bad line is reported on standard error and skipped. A storage
    /// failure (a full disk, an I/O error) is reported and the same lines are retried until
    /// they commit, never twice.
    #[command(
        after_help = "Example:\n  tail -f events.ndjson | prr stream --emit member_bans,server_acl"
    )]
    Stream {
        /// Replicas whose deltas to write (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "REPLICA,...")]
        emit: Vec<String>,
        /// At most this many lines in one source delta.
        #[arg(long, default_value_t = 4096, value_name = "N")]
        max_batch: usize,
    },
    /// Serve the replicas over HTTP, and receive a homeserver's appservice transactions.
    ///
    /// `GET /v1/status`, `GET /v1/replicas/{name}?partition=KEY&as_of=SEQ`,
    /// `GET /v1/replicas/{name}/deltas?since=SEQ&wait=SECONDS`, `POST /v1/ingest` (any file
    /// shape `prr ingest` reads; answers `{"seq": N}` once durable), `POST /v1/preview?emit=`
    /// (what that ingest would change, stored nowhere), `GET /v1/explain?instance=&user=`
    /// (`prr explain`), `POST /v1/check/join|invite|sender` (`prr check`), `GET /metrics`. With
    /// `--registration`, the homeserver's transactions (`PUT /_matrix/app/v1/transactions/{txnId}`)
    /// become source deltas, exactly once by event ID, and the state of every room an instance
    /// names is fetched (joining its bot), at start, when named and every --resync-every.
    /// Prints `listening on ADDR` when ready;
    /// SIGTERM or SIGINT stops it cleanly (exit 0). Without `--api-token-file` it listens on
    /// loopback addresses only. Logs go to standard error (`RUST_LOG`, default `info`). The
    /// examples stop it with SIGTERM after 2 s.
    #[command(
        after_help = "Examples:\n  timeout --preserve-status -s TERM 2 prr serve --listen 127.0.0.1:0\n  echo s3cret > api-token && timeout --preserve-status -s TERM 2 prr serve --listen 0.0.0.0:0 --api-token-file api-token"
    )]
    Serve {
        /// The address to listen on (port 0: any free port).
        #[arg(long, default_value = prr_serve::DEFAULT_LISTEN, value_name = "ADDR")]
        listen: String,
        /// The homeserver's client-server URL (with --registration or --access-token-file).
        #[arg(long, value_name = "URL")]
        homeserver: Option<String>,
        /// The appservice registration YAML also given to the homeserver (id, url, as_token,
        /// hs_token, sender_localpart, namespaces).
        #[arg(
            long,
            value_name = "FILE",
            requires = "homeserver",
            conflicts_with = "access_token_file"
        )]
        registration: Option<PathBuf>,
        /// Bot mode: follow /sync as the account of this access token (the file's contents);
        /// the instance manifest is the account's Draupnir configuration.
        #[arg(long, value_name = "FILE", requires = "homeserver")]
        access_token_file: Option<PathBuf>,
        /// Require `Authorization: Bearer <token>` on every /v1 request (the file's contents).
        #[arg(long, value_name = "FILE")]
        api_token_file: Option<PathBuf>,
        /// Also capture revisions this many seconds after a change (besides --revision-every
        /// and shutdown).
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        revision_interval: u64,
        /// With a homeserver, fetch the state of every room the instances name again this
        /// many seconds after the last time, ingesting what differs (heals lost events).
        #[arg(
            long,
            default_value_t = 3600,
            value_name = "SECONDS",
            requires = "homeserver"
        )]
        resync_every: u64,
        /// Keep the IDs of the events a homeserver source delivered (`source_events`, which
        /// makes it exactly once) this many seconds after they came and after the start;
        /// then those that are no longer the current state at their key are pruned.
        #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
        dedup_retention: u64,
        /// Compact in process this many seconds apart: capture revisions, delete the source
        /// log before the oldest retained revision (as `prr compact` does), and collect the
        /// strings nothing retained uses, from the store and from memory. Commands wait
        /// while the dataflow restarts from the revisions.
        #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
        compact_every: u64,
        /// Enact the intents of the caught-up instances on the homeserver (bans, server
        /// ACLs), recording each outcome in `outcomes` (needs --homeserver).
        #[arg(long, requires = "homeserver")]
        enact: bool,
        /// With --enact, set a room's server ACL at most once this many seconds.
        #[arg(long, default_value_t = 15, value_name = "SECONDS", requires = "enact")]
        acl_interval: u64,
        /// With --enact, act on at most this many rooms at once.
        #[arg(long, default_value_t = prr_serve::DEFAULT_CONCURRENCY, value_name = "N", requires = "enact")]
        enact_concurrency: usize,
        /// Run the threads that do bulk work (the core and dataflow threads, the parsing of
        /// ingest bodies) at this priority, so that the HTTP threads answer checks at once
        /// while a join wave is ingested (Linux): `idle` (the SCHED_IDLE policy: they run when
        /// no thread of normal priority wants a core), or a nice value from 0 to 19 (0: the
        /// process's own; gives them a share of a busy machine's cores).
        #[arg(long, default_value_t = prr_serve::DEFAULT_BULK_PRIORITY, value_name = "PRIORITY")]
        bulk_priority: prr_serve::BulkPriority,
    },
    /// Enact the pending intents once: bans and server ACLs on the homeserver.
    ///
    /// Catches up first (fetches the current state of every room the instances name and
    /// ingests what differs), then, for each instance (or INSTANCE alone), acts as its bot
    /// (the appservice masquerades as it; in bot mode, the token's account for its own
    /// instance): bans each user of `member_bans` not banned yet, with the rule's reason, and
    /// sets `m.room.server_acl` in each protected room whose `acl_sync` is false. Each
    /// outcome (done, failed, withdrawn) is recorded in `outcomes` before the room's next
    /// action and printed. An action refused before for the same intent is not tried again
    /// without --retry-failed. Exit status 1 when an action failed or an instance could not
    /// be caught up. `--dry-run` prints the pending actions and changes nothing.
    #[command(
        after_help = "Examples:\n  prr enact --dry-run\n  prr enact @draupnir:example.org --dry-run --only bans --format table\n\nAgainst a homeserver, as its appservice or as a bot account:\n  prr enact --homeserver http://127.0.0.1:8008 --registration registration.yaml\n  prr enact @bot:example.org --homeserver https://example.org --access-token-file bot-token"
    )]
    Enact {
        /// The instance (its user ID) [default: every instance].
        instance: Option<String>,
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only bans, or only server ACLs.
        #[arg(long, value_enum)]
        only: Option<EnactOnly>,
        /// Try again the actions the homeserver refused for the same intent.
        #[arg(long)]
        retry_failed: bool,
        /// The homeserver's client-server URL (needed unless --dry-run).
        #[arg(long, value_name = "URL", required_unless_present = "dry_run")]
        homeserver: Option<String>,
        /// The appservice registration YAML (the appservice acts as each instance).
        #[arg(
            long,
            value_name = "FILE",
            requires = "homeserver",
            conflicts_with = "access_token_file"
        )]
        registration: Option<PathBuf>,
        /// Bot mode: act as the account of this access token (the file's contents).
        #[arg(long, value_name = "FILE", requires = "homeserver")]
        access_token_file: Option<PathBuf>,
        /// Output format [default: table on a terminal, ndjson otherwise].
        #[arg(long, value_enum)]
        format: Option<ShowFormat>,
    },
    /// Print the replica DAG: inputs and partition keys.
    #[command(after_help = "Examples:\n  prr graph\n  prr graph --format mermaid")]
    Graph {
        /// Output format.
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  prr completions bash > ~/.local/share/bash-completion/completions/prr"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}
