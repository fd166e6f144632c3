//! Prometheus metrics, as `todo-mcp http` serves them at `GET /metrics` (OpenMetrics text,
//! encoded by the official client, `prometheus-client`).
//!
//! Every metric is defined once, here: its name, help, unit and labels. Label values come
//! from typed values only ([`ErrorKind`], [`Refusal`], [`RetryReason`], a tool name the
//! server knows), so a series' count is bounded: a tool name the server does not have is
//! counted as [`UNKNOWN_TOOL`].
//!
//! Where they live: one set per process ([`global`]). Only the top layers record into it:
//! `tools` (each call's outcome and duration, and its transaction's retries, which `store`
//! counts on the [`Call`](crate::store::calls::Call) itself) and `transport` (refusals before
//! any tool runs). The pool's figures are read from `db` at scrape time. So no lower layer
//! knows metrics exist, and no constructor takes a handle: a scrape describes a process,
//! which is what a static is.
//!
//! Recording is cheap: each tool's counters and histogram are created when the server is
//! built ([`Metrics::tool`]) and held by its routing table, so a call adds to atomics (and
//! takes its tool's histogram lock, uncontended unless the same tool runs concurrently)
//! without allocating, hashing label sets or taking the registry's lock.

use crate::auth::Refusal;
use crate::db::PoolStats;
use crate::store::ErrorKind;
use crate::store::calls::{Retries, RetryReason};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The media type of what [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `tool` label of a call to a tool the server does not have. Parenthesised, so that it
/// cannot be a real tool's name (MCP tool names are letters, digits, `_`, `-` and `.`).
pub const UNKNOWN_TOOL: &str = "(unknown)";

/// Upper bounds of the call duration histogram's buckets, in seconds: a call is usually a
/// few milliseconds; the pool and statement timeouts are seconds.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a tool call ended: `ok`, or the kind of its error as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Failed(ErrorKind),
}

impl Outcome {
    const COUNT: usize = 1 + ErrorKind::ALL.len();

    fn all() -> impl Iterator<Item = Outcome> {
        std::iter::once(Outcome::Ok).chain(ErrorKind::ALL.map(Outcome::Failed))
    }

    /// Its place in [`Outcome::all`].
    fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed(kind) => 1 + kind as usize,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(kind) => kind.as_str(),
        }
    }
}

/// What the server could send a client unasked. It sends none of them today: it declares
/// no `logging` capability and no `listChanged`, and reports no progress (every call is one
/// short transaction). The counter is served at 0 so that dashboards need not change when
/// one is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// `notifications/progress`
    Progress,
    /// `notifications/message`
    Logging,
    /// `notifications/tools/list_changed`
    ToolsListChanged,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 3] = [
        NotificationKind::Progress,
        NotificationKind::Logging,
        NotificationKind::ToolsListChanged,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Progress => "progress",
            NotificationKind::Logging => "logging",
            NotificationKind::ToolsListChanged => "tools_list_changed",
        }
    }
}

/// Why a request was refused for want of capacity (`transport::http`'s admission), before
/// anything of it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverloadRefusal {
    /// As many requests were under way and as many waiting as `--max-in-flight` allows.
    Busy,
    /// It waited `--max-queue-wait` for a turn.
    QueueTimeout,
}

impl OverloadRefusal {
    pub const ALL: [OverloadRefusal; 2] = [OverloadRefusal::Busy, OverloadRefusal::QueueTimeout];

    pub const fn as_str(self) -> &'static str {
        match self {
            OverloadRefusal::Busy => "busy",
            OverloadRefusal::QueueTimeout => "queue_timeout",
        }
    }
}

/// A label value written as its `as_str`.
macro_rules! label_value {
    ($($type:ty),*) => {$(
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
label_value!(
    Outcome,
    Refusal,
    RetryReason,
    NotificationKind,
    OverloadRefusal
);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RetryLabels {
    tool: String,
    reason: RetryReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OverloadLabels {
    reason: OverloadRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotificationLabels {
    kind: NotificationKind,
}

/// The process's metrics (see the module docs). Scrape-time figures (the pool's) are not
/// kept here: [`Metrics::encode`] reads them.
pub struct Metrics {
    tool_calls: Family<CallLabels, Counter>,
    tool_call_duration: Family<ToolLabels, Histogram, fn() -> Histogram>,
    transaction_retries: Family<RetryLabels, Counter>,
    auth_refusals: Family<RefusalLabels, Counter>,
    notifications_sent: Family<NotificationLabels, Counter>,
    failure_records_skipped: Counter,
    connections_refused: Counter,
    calls_not_run: Counter,
    overload_refusals: Family<OverloadLabels, Counter>,
    /// `overload_refusals`' series, indexed by `OverloadRefusal as usize`.
    overload_by_reason: [Counter; OverloadRefusal::ALL.len()],
    requests_in_flight: Gauge,
    requests_waiting: Gauge,
    /// When an overload refusal was last logged, in seconds since the process's start.
    overload_logged_at: std::sync::atomic::AtomicU64,
    /// `auth_refusals`' series, indexed by `Refusal as usize`.
    refusals_by_reason: [Counter; Refusal::ALL.len()],
    /// `notifications_sent`' series, indexed by `NotificationKind as usize`.
    notifications_by_kind: [Counter; NotificationKind::ALL.len()],
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    fn new() -> Self {
        // Every reason and kind is served from the start, at 0: a rate over a series that
        // appears with its first event misses that event.
        let auth_refusals = Family::<RefusalLabels, Counter>::default();
        let refusals_by_reason = Refusal::ALL.map(|reason| {
            auth_refusals
                .get_or_create(&RefusalLabels { reason })
                .clone()
        });
        let notifications_sent = Family::<NotificationLabels, Counter>::default();
        let notifications_by_kind = NotificationKind::ALL.map(|kind| {
            notifications_sent
                .get_or_create(&NotificationLabels { kind })
                .clone()
        });
        let overload_refusals = Family::<OverloadLabels, Counter>::default();
        let overload_by_reason = OverloadRefusal::ALL.map(|reason| {
            overload_refusals
                .get_or_create(&OverloadLabels { reason })
                .clone()
        });
        Metrics {
            tool_calls: Family::default(),
            tool_call_duration: Family::new_with_constructor(duration_histogram),
            transaction_retries: Family::default(),
            auth_refusals,
            notifications_sent,
            failure_records_skipped: Counter::default(),
            connections_refused: Counter::default(),
            calls_not_run: Counter::default(),
            overload_refusals,
            overload_by_reason,
            requests_in_flight: Gauge::default(),
            requests_waiting: Gauge::default(),
            overload_logged_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            refusals_by_reason,
            notifications_by_kind,
        }
    }

    /// The handles recording `tool`'s calls (`name` is a tool the server has, or
    /// [`UNKNOWN_TOOL`]). Asking twice gives the same series.
    ///
    /// Only the outcomes a call can have are served (a tool the server has is never
    /// `unknown_tool`, and a call to one it does not have is nothing else): the others get
    /// a counter that is never exported, as they are never counted.
    pub fn tool(&self, name: &str) -> ToolMetrics {
        let known = name != UNKNOWN_TOOL;
        let calls = std::array::from_fn(|index| {
            let outcome = Outcome::all()
                .nth(index)
                .expect("Outcome::COUNT counts Outcome::all");
            let unknown_tool = outcome == Outcome::Failed(ErrorKind::UnknownTool);
            if known == unknown_tool {
                return Counter::default();
            }
            self.tool_calls
                .get_or_create(&CallLabels {
                    tool: name.to_owned(),
                    outcome,
                })
                .clone()
        });
        let retries = RetryReason::ALL.map(|reason| {
            self.transaction_retries
                .get_or_create(&RetryLabels {
                    tool: name.to_owned(),
                    reason,
                })
                .clone()
        });
        let duration = self
            .tool_call_duration
            .get_or_create(&ToolLabels {
                tool: name.to_owned(),
            })
            .clone();
        ToolMetrics(Arc::new(ToolHandles {
            calls,
            duration,
            retries,
        }))
    }

    /// A request refused before any tool ran (401, 403, or 503 when the credential could
    /// not be checked).
    pub fn auth_refused(&self, reason: Refusal) {
        self.refusals_by_reason[reason as usize].inc();
    }

    /// A failed call not recorded: its user's failures had used the hour's budget.
    pub fn failure_record_skipped(&self) {
        self.failure_records_skipped.inc();
    }

    /// A connection refused (503, closed) because the server held its most.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A tool call that did nothing: no database connection could be had (not recorded).
    pub fn call_not_run(&self) {
        self.calls_not_run.inc();
    }

    /// A request refused for want of capacity, before anything of it ran.
    pub fn overload_refused(&self, reason: OverloadRefusal) {
        self.overload_by_reason[reason as usize].inc();
    }

    /// Whether to log an overload refusal now: at most once every 10 s.
    pub fn should_log_overload(&self) -> bool {
        use std::sync::atomic::Ordering;
        static START: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);
        let now = START.elapsed().as_secs();
        let last = self.overload_logged_at.load(Ordering::Relaxed);
        if last != u64::MAX && now < last + 10 {
            return false;
        }
        self.overload_logged_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// An MCP request admitted (`started`), or done (`!started`).
    pub fn request_in_flight(&self, started: bool) {
        if started {
            self.requests_in_flight.inc();
        } else {
            self.requests_in_flight.dec();
        }
    }

    /// An MCP request began (`started`) or ended its wait for a turn.
    pub fn request_waiting(&self, started: bool) {
        if started {
            self.requests_waiting.inc();
        } else {
            self.requests_waiting.dec();
        }
    }

    /// A notification sent to a client (none are today: see [`NotificationKind`]).
    pub fn notification_sent(&self, kind: NotificationKind) {
        self.notifications_by_kind[kind as usize].inc();
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]), with the pool's
    /// figures if there is a pool.
    pub fn encode(&self, pool: Option<&PoolStats>) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("todo_mcp");
        registry.register(
            "build",
            "The running todo-mcp's version (always 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "tool_calls",
            "Tool calls by tool and outcome (`ok`, or the error kind the client was told)",
            self.tool_calls.clone(),
        );
        registry.register_with_unit(
            "tool_call_duration",
            "Time from a tool call's arrival to its answer, failures' records included",
            Unit::Seconds,
            self.tool_call_duration.clone(),
        );
        registry.register(
            "transaction_retries",
            "Tool call transactions run again, by tool and why (nothing of the failed attempt \
             was saved)",
            self.transaction_retries.clone(),
        );
        registry.register(
            "auth_refusals",
            "Requests refused before any tool ran, by reason (missing credential, the \
             token's fault, insufficient_scope, or the check could not be made)",
            self.auth_refusals.clone(),
        );
        registry.register(
            "notifications_sent",
            "Notifications sent to clients, by kind",
            self.notifications_sent.clone(),
        );
        registry.register(
            "failure_records_skipped",
            "Failed tool calls not recorded because their user's failures had had this \
             hour's records (--max-failure-records-per-hour)",
            self.failure_records_skipped.clone(),
        );
        registry.register(
            "connections_refused",
            "HTTP connections refused at accept because the server held --max-connections",
            self.connections_refused.clone(),
        );
        registry.register(
            "calls_not_run",
            "Tool calls that did nothing because no database connection could be had within \
             --pool-timeout (told `unavailable: … nothing was done`; not recorded)",
            self.calls_not_run.clone(),
        );
        registry.register(
            "overload_refusals",
            "MCP requests refused with 503 before anything of them ran, by reason (`busy`: \
             --max-in-flight under way and as many waiting; `queue_timeout`: no turn within \
             --max-queue-wait)",
            self.overload_refusals.clone(),
        );
        registry.register(
            "requests_in_flight",
            "MCP requests being handled now (at most --max-in-flight)",
            self.requests_in_flight.clone(),
        );
        registry.register(
            "requests_waiting",
            "MCP requests waiting for a turn now (at most --max-in-flight)",
            self.requests_waiting.clone(),
        );
        if let Some(pool) = pool {
            register_pool(&mut registry, pool);
        }
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AcquireLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClosedLabels {
    reason: &'static str,
}

/// The pool's figures as of now (bb8's own counts: nothing is counted per query for them).
fn register_pool(registry: &mut Registry, pool: &PoolStats) {
    let gauges: [(&str, &str, u64); 5] = [
        (
            "pool_max_connections",
            "Most database connections the pool opens (--pool-size)",
            pool.max_size.into(),
        ),
        (
            "pool_connections",
            "Database connections open, idle or in use",
            pool.open.into(),
        ),
        (
            "pool_idle_connections",
            "Open database connections not in use",
            pool.idle.into(),
        ),
        (
            "pool_in_use_connections",
            "Database connections handed out",
            pool.in_use().into(),
        ),
        (
            "pool_waiting",
            "Callers waiting for a database connection now",
            pool.waiting,
        ),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, ConstGauge::new(saturate(value)));
    }
    let acquires = Family::<AcquireLabels, Counter>::default();
    for (result, count) in [
        ("direct", pool.got_directly),
        ("waited", pool.got_after_waiting),
        ("timed_out", pool.timed_out),
    ] {
        acquires
            .get_or_create(&AcquireLabels { result })
            .inc_by(count);
    }
    registry.register(
        "pool_acquires",
        "Database connections asked of the pool, by result: handed out at once, after a \
         wait, or never (the call failed with `unavailable`)",
        acquires,
    );
    registry.register_with_unit(
        "pool_acquire_wait",
        "Time callers spent waiting for a database connection, in all",
        Unit::Seconds,
        ConstCounter::new(pool.wait_time.as_secs_f64()),
    );
    registry.register(
        "pool_connections_created",
        "Database connections opened",
        ConstCounter::new(pool.connections_created),
    );
    let closed = Family::<ClosedLabels, Counter>::default();
    for (reason, count) in [
        ("broken", pool.closed_broken),
        ("invalid", pool.closed_invalid),
        ("max_lifetime", pool.closed_max_lifetime),
        ("idle_timeout", pool.closed_idle_timeout),
    ] {
        closed.get_or_create(&ClosedLabels { reason }).inc_by(count);
    }
    registry.register(
        "pool_connections_closed",
        "Database connections the pool closed, by reason",
        closed,
    );
}

fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One tool's series, created once ([`Metrics::tool`]) and cloned cheaply (an `Arc`).
#[derive(Debug, Clone)]
pub struct ToolMetrics(Arc<ToolHandles>);

#[derive(Debug)]
struct ToolHandles {
    /// Indexed by [`Outcome::index`].
    calls: [Counter; Outcome::COUNT],
    duration: Histogram,
    /// Indexed by `RetryReason as usize`.
    retries: [Counter; RetryReason::ALL.len()],
}

impl ToolMetrics {
    /// A finished call: how it ended, how long it took, and its transaction's retries.
    pub fn record(&self, outcome: Outcome, elapsed: Duration, retries: &Retries) {
        self.0.calls[outcome.index()].inc();
        self.0.duration.observe(elapsed.as_secs_f64());
        for (reason, count) in retries.counts() {
            if count > 0 {
                self.0.retries[reason as usize].inc_by(count.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handle arrays are indexed by discriminant: the `ALL` lists must be in
    /// declaration order.
    #[test]
    fn indexes_follow_the_all_lists() {
        for (index, outcome) in Outcome::all().enumerate() {
            assert_eq!(outcome.index(), index, "{outcome:?}");
        }
        assert_eq!(Outcome::all().count(), Outcome::COUNT);
        for (index, reason) in RetryReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index, "{reason:?}");
        }
        for (index, reason) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index, "{reason:?}");
        }
        for (index, kind) in NotificationKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, index, "{kind:?}");
        }
    }

    #[test]
    fn a_recorded_call_shows_in_the_text() {
        let metrics = Metrics::new();
        let tool = metrics.tool("add_task");
        metrics.tool(UNKNOWN_TOOL);
        let retries = Retries::default();
        tool.record(
            Outcome::Failed(ErrorKind::InvalidArgument),
            Duration::from_millis(3),
            &retries,
        );
        metrics.auth_refused(Refusal::Expired);
        let pool = PoolStats {
            max_size: 10,
            open: 3,
            idle: 2,
            waiting: 0,
            got_directly: 7,
            got_after_waiting: 1,
            timed_out: 0,
            wait_time: Duration::from_millis(500),
            connections_created: 3,
            closed_broken: 0,
            closed_invalid: 0,
            closed_max_lifetime: 0,
            closed_idle_timeout: 0,
        };
        let text = metrics.encode(Some(&pool)).expect("encodes");
        for line in [
            "todo_mcp_tool_calls_total{tool=\"add_task\",outcome=\"invalid_argument\"} 1",
            "todo_mcp_tool_calls_total{tool=\"add_task\",outcome=\"ok\"} 0",
            "todo_mcp_tool_call_duration_seconds_count{tool=\"add_task\"} 1",
            "todo_mcp_tool_call_duration_seconds_bucket{le=\"0.005\",tool=\"add_task\"} 1",
            "todo_mcp_transaction_retries_total{tool=\"add_task\",reason=\"contention\"} 0",
            "todo_mcp_auth_refusals_total{reason=\"expired\"} 1",
            "todo_mcp_tool_calls_total{tool=\"(unknown)\",outcome=\"unknown_tool\"} 0",
            "todo_mcp_auth_refusals_total{reason=\"missing\"} 0",
            "todo_mcp_notifications_sent_total{kind=\"progress\"} 0",
            "todo_mcp_pool_in_use_connections 1",
            "todo_mcp_pool_acquires_total{result=\"waited\"} 1",
            "todo_mcp_pool_acquire_wait_seconds_total 0.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            text.contains(&format!(
                "todo_mcp_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("tool=\"add_task\",outcome=\"unknown_tool\""));
        assert!(!text.contains("tool=\"(unknown)\",outcome=\"ok\""));
    }
}
