//! Connecting the clients and driving them: warm-up, then the measured phase, bounded by
//! time or by a number of calls.

use crate::client::{CallError, Client, HttpClient, SseClient, StdioClient};
use crate::options::{Bound, Mix, SingleTool, Transport};
use crate::server::ServerBinary;
use crate::stats::{Errors, Samples};
use crate::system::{CpuShares, CpuSnapshot};
use crate::workload::ClientScript;
use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Clients connecting (and setting up) at once.
const CONNECT_CONCURRENCY: usize = 16;
/// A client that fails this many calls in a row stops (its server is likely gone).
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

/// One simulated user: a connected client and its script.
pub struct Session {
    pub client: Client,
    pub script: ClientScript,
}

/// Where the clients connect.
pub enum Target<'a> {
    /// One `todo-mcp stdio` process per client.
    Stdio(&'a ServerBinary),
    /// One `todo-mcp http` at this base URL.
    Http(String),
}

/// Connects one client per token and runs its setup.
pub async fn connect_all(
    transport: Transport,
    target: &Target<'_>,
    users_and_tokens: Vec<(String, String)>,
    mix: Mix,
    tool: SingleTool,
) -> anyhow::Result<Vec<Session>> {
    futures_util::stream::iter(users_and_tokens.into_iter().enumerate())
        .map(|(index, (user, token))| async move {
            let mut client = connect(transport, target, index, token)
                .await
                .with_context(|| format!("connecting client {index} ({user})"))?;
            let mut script = ClientScript::new(mix, tool, user.clone());
            script
                .set_up(&mut client)
                .await
                .with_context(|| format!("setting up client {index} ({user})"))?;
            Ok::<_, anyhow::Error>(Session { client, script })
        })
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}

/// Connects client `index` with `token` to `target`.
pub async fn connect(
    transport: Transport,
    target: &Target<'_>,
    index: usize,
    token: String,
) -> anyhow::Result<Client> {
    match (transport, target) {
        (Transport::Stdio, Target::Stdio(server)) => {
            let (_, log) = server.log_file(&format!("server-stdio-{index}.log"))?;
            let mut command = server.command();
            command.arg("stdio").env("TODO_MCP_TOKEN", token);
            Ok(Client::Stdio(StdioClient::connect(command, log).await?))
        }
        (Transport::Http, Target::Http(base)) => Ok(Client::Http(HttpClient::new(base, token)?)),
        (Transport::Sse, Target::Http(base)) => {
            Ok(Client::Sse(SseClient::connect(base, token).await?))
        }
        _ => anyhow::bail!("transport {} does not match its server", transport.name()),
    }
}

pub struct RunSettings {
    pub warmup: Duration,
    pub bound: Bound,
    pub call_timeout: Duration,
    /// Mean pause between a client's calls (zero: closed loop).
    pub think: Duration,
    /// The server processes, for CPU accounting.
    pub server_pids: Vec<u32>,
}

/// What a run measured.
pub struct RunOutcome {
    pub sessions: Vec<Session>,
    pub samples: Samples,
    /// Errors of the measured phase.
    pub errors: Errors,
    /// Errors of the warm-up.
    pub warmup_errors: Errors,
    /// When the warm-up ended and measuring started.
    pub measure_from: Instant,
    /// From the end of the warm-up to the end of the last measured call.
    pub window: Duration,
    pub cpu: CpuShares,
}

/// The shared clock of a run and, for --calls, the calls left to make.
struct Schedule {
    measure_from: Instant,
    measure_until: Option<Instant>,
    calls_left: Option<AtomicU64>,
}

impl Schedule {
    /// Whether a call starting now may go ahead, and whether it is measured.
    fn admit(&self, now: Instant) -> Option<bool> {
        let measured = now >= self.measure_from;
        if let Some(until) = self.measure_until
            && now >= until
        {
            return None;
        }
        if measured && let Some(left) = &self.calls_left {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .ok()?;
        }
        Some(measured)
    }
}

/// What one client brings back.
struct ClientReport {
    session: Session,
    samples: Samples,
    errors: Errors,
    warmup_errors: Errors,
    last_measured_end: Option<Instant>,
}

/// Runs every session until the bound, concurrently.
pub async fn run(sessions: Vec<Session>, settings: &RunSettings) -> anyhow::Result<RunOutcome> {
    let start = Instant::now();
    let measure_from = start + settings.warmup;
    let schedule = Arc::new(Schedule {
        measure_from,
        measure_until: match settings.bound {
            Bound::Duration(duration) => Some(measure_from + duration),
            Bound::Calls(_) => None,
        },
        calls_left: match settings.bound {
            Bound::Duration(_) => None,
            Bound::Calls(n) => Some(AtomicU64::new(n)),
        },
    });
    let pids = settings.server_pids.clone();
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        CpuSnapshot::take(&pids)
    });
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(n, session)| {
            let pacing = Pacing::new(settings.think, n as u64);
            tokio::spawn(drive(
                session,
                schedule.clone(),
                settings.call_timeout,
                pacing,
            ))
        })
        .collect();
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        reports.push(task.await.context("a client task panicked")?);
    }
    let cpu_end = CpuSnapshot::take(&settings.server_pids);
    let cpu_start = cpu_at_start.await.context("the CPU sampler panicked")?;

    let mut outcome = RunOutcome {
        sessions: Vec::with_capacity(reports.len()),
        samples: Samples::default(),
        errors: Errors::default(),
        warmup_errors: Errors::default(),
        measure_from,
        window: Duration::ZERO,
        cpu: CpuShares::between(&cpu_start, &cpu_end),
    };
    let mut last_end = measure_from;
    for report in reports {
        outcome.samples.merge(report.samples);
        outcome.errors.merge(report.errors);
        outcome.warmup_errors.merge(report.warmup_errors);
        if let Some(end) = report.last_measured_end {
            last_end = last_end.max(end);
        }
        outcome.sessions.push(report.session);
    }
    outcome.window = last_end.saturating_duration_since(measure_from);
    Ok(outcome)
}

/// One client's loop: call, time, acknowledge, until the schedule says stop.
async fn drive(
    mut session: Session,
    schedule: Arc<Schedule>,
    call_timeout: Duration,
    mut pacing: Pacing,
) -> ClientReport {
    let mut samples = Samples::default();
    let mut errors = Errors::default();
    let mut warmup_errors = Errors::default();
    let mut last_measured_end = None;
    let mut consecutive_errors = 0;
    while let Some(measured) = schedule.admit(Instant::now()) {
        let call = session.script.next_call();
        let label = call.request.label();
        let started = Instant::now();
        let result =
            match tokio::time::timeout(call_timeout, session.client.call(&call.request)).await {
                Ok(result) => result,
                Err(_) => Err(CallError::Unknown(format!(
                    "no answer within {call_timeout:?}"
                ))),
            };
        let ended = Instant::now();
        let phase_errors = if measured {
            &mut errors
        } else {
            &mut warmup_errors
        };
        match &result {
            Ok(_) => consecutive_errors = 0,
            Err(error) => {
                phase_errors.record(label, error);
                consecutive_errors += 1;
            }
        }
        if let Some(problem) = session.script.acknowledge(call, &result) {
            phase_errors.note("bad answer", problem);
        }
        if measured {
            samples.record(label, ended - started);
            last_measured_end = Some(ended);
        }
        if let Some(pause) = pacing.next_pause() {
            tokio::time::sleep(pause).await;
        }
        if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
            errors.note(
                "gave up",
                format!(
                    "{} stopped after {MAX_CONSECUTIVE_ERRORS} failed calls in a row",
                    session.script.ledger.user
                ),
            );
            break;
        }
    }
    ClientReport {
        session,
        samples,
        errors,
        warmup_errors,
        last_measured_end,
    }
}

/// Think time between one client's calls: uniform between 0.5x and 1.5x the mean, from a
/// per-client xorshift sequence (reproducible, and clients don't pause in step).
struct Pacing {
    mean: Duration,
    state: u64,
}

impl Pacing {
    fn new(mean: Duration, client: u64) -> Self {
        Pacing {
            mean,
            state: 0x9E37_79B9_7F4A_7C15
                ^ (client.wrapping_add(1)).wrapping_mul(0xBF58_476D_1CE4_E5B9),
        }
    }

    fn next_pause(&mut self) -> Option<Duration> {
        if self.mean.is_zero() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let fraction = 0.5 + (self.state % 10_000) as f64 / 10_000.0;
        Some(self.mean.mul_f64(fraction))
    }
}
