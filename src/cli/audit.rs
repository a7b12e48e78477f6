//! `lockguard audit`: read-only, checks the allocation invariants of a live cluster.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::api::{Claim, Pool};
use crate::audit::history::{self, Recorder};
use crate::audit::{self, Report, Scope, Violation, claim_key};

/// Exit status when a violation was found; 2 means the audit itself could not run.
pub const EXIT_VIOLATION: u8 = 1;
pub const EXIT_AUDIT_FAILED: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Output format: one line per violation and a summary, or one JSON document.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
    /// Before the snapshot audit, watch pools and claims for this many seconds and check
    /// the safety invariants at every revision in between.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    #[serde(flatten)]
    report: Report,
    /// Claims that changed while they were read; their checks were skipped.
    unsettled_claims: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<HistoryOutcome>,
}

#[derive(Debug, Serialize)]
struct HistoryOutcome {
    changes: usize,
    gaps: usize,
    violations: Vec<(u64, Violation)>,
}

pub async fn audit(args: AuditArgs) -> ExitCode {
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockguard audit: no cluster access (KUBECONFIG or in-cluster config): {e}");
            return ExitCode::from(EXIT_AUDIT_FAILED);
        }
    };
    let history = match args.watch {
        Some(seconds) => {
            let recorder = Recorder::start(client.clone());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let replay = recorder.finish();
            let violations = replay.violations.into_iter().map(|s| (s.revision, s.violation)).collect();
            Some(HistoryOutcome { changes: replay.changes, gaps: replay.gaps, violations })
        }
        None => None,
    };
    let (report, unsettled_claims) = match snapshot(&client).await {
        Ok(done) => done,
        Err(e) => {
            eprintln!("lockguard audit: cannot read pools and claims: {e}");
            return ExitCode::from(EXIT_AUDIT_FAILED);
        }
    };
    let outcome = Outcome { report, unsettled_claims, history };
    print(&outcome, args.output);
    let clean = outcome.report.is_clean() && outcome.history.as_ref().is_none_or(|h| h.violations.is_empty());
    if clean { ExitCode::SUCCESS } else { ExitCode::from(EXIT_VIOLATION) }
}

/// Lists claims, pools, and claims again. A claim that changed in between is left out of
/// the verdict: its status and the ledger were not read at one instant.
async fn snapshot(client: &Client) -> Result<(Report, usize), kube::Error> {
    let claims: Api<Claim> = Api::all(client.clone());
    let pools: Api<Pool> = Api::all(client.clone());
    let before = claims.list(&ListParams::default()).await?.items;
    let pools = pools.list(&ListParams::default()).await?.items;
    let after = claims.list(&ListParams::default()).await?.items;
    let versions: HashMap<String, Option<String>> =
        before.iter().map(|c| (claim_key(c), c.resource_version())).collect();
    let mut unsettled: HashSet<String> = after
        .iter()
        .filter(|c| versions.get(&claim_key(c)) != Some(&c.resource_version()))
        .map(claim_key)
        .collect();
    let present: HashSet<String> = after.iter().map(claim_key).collect();
    unsettled.extend(versions.keys().filter(|k| !present.contains(*k)).cloned());
    let mut report = audit::audit(&pools, &after, Scope::Full);
    report.violations.retain(|v| v.claim.as_ref().is_none_or(|c| !unsettled.contains(c)));
    Ok((report, unsettled.len()))
}

fn print(outcome: &Outcome, output: Output) {
    match output {
        Output::Json => match serde_json::to_string_pretty(outcome) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("lockguard audit: cannot render JSON: {e}"),
        },
        Output::Text => {
            if let Some(h) = &outcome.history {
                for (revision, v) in &h.violations {
                    println!("at revision {revision}: {v}");
                }
                let kinds = history::by_kind(h.violations.iter().map(|(_, v)| v));
                println!(
                    "history: {} changes replayed, {} unobserved windows, {} violations {kinds:?}",
                    h.changes,
                    h.gaps,
                    h.violations.len()
                );
            }
            for v in &outcome.report.violations {
                println!("{v}");
            }
            let r = &outcome.report;
            let verdict =
                if r.is_clean() { "clean".to_string() } else { format!("{} violations", r.violations.len()) };
            println!(
                "audited {} pools, {} claims, {} items allocated: {verdict}{}",
                r.pools,
                r.claims,
                r.items_allocated,
                match outcome.unsettled_claims {
                    0 => String::new(),
                    n =>
                        format!(" ({n} claims changed while being read and were skipped; re-run when quiet)"),
                }
            );
        }
    }
}
