//! The write path (issue 13, scope 7): every write load against the one-row SQLite
//! ceiling measured in the same round, for this build and, optionally, an older binary
//! (`--compare-with`), alternating who goes first; medians of `--rounds`.

use std::path::Path;
use std::time::Duration;

use lifeboat_testkit::Binary;

use crate::load::{self, Op};
use crate::{list, median, ops, raw_ceiling};

/// The loads, in order: what they write and with how many clients.
const LOADS: [(Op, usize); 6] = [
    (Op::Checkpoint, 1),
    (Op::Checkpoint, 16),
    (Op::Checkpoint, 64),
    (Op::LeaseHeartbeat, 64),
    (Op::ProgressHeartbeat, 64),
    (Op::Patch, 64),
];

/// One binary's figures over the rounds.
#[derive(Default)]
struct Figures {
    /// Per load: ops/s and p99 ms of each round.
    loads: Vec<(Vec<f64>, Vec<f64>)>,
    /// Checkpoints at 16 clients alone, and with 100 event streams each following one
    /// written session.
    alone: Vec<f64>,
    followed: Vec<f64>,
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    dir: &Path,
    window: Duration,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let server = Binary::start_exe(binary, dir, &["--streams-per-key", "1000"]);
    runtime.block_on(load::prepare(&server.base))?;
    figures.loads.resize_with(LOADS.len(), Default::default);
    for ((op, clients), (rates, p99s)) in LOADS.into_iter().zip(figures.loads.iter_mut()) {
        let result = runtime.block_on(load::run(&server.base, op, clients, window))?;
        rates.push(result.ops_per_second);
        p99s.push(result.p99_ms);
    }
    let alone = runtime.block_on(load::run(&server.base, Op::Checkpoint, 16, window))?;
    let (followed, _) = runtime.block_on(ops::with_subscribers(
        &server.base,
        |n| format!("?session_id=bench-{}", n % 16),
        window,
    ))?;
    figures.alone.push(alone.ops_per_second);
    figures.followed.push(followed);
    Ok(())
}

/// Runs the write loads; prints one table.
pub(crate) fn section(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    baseline: Option<&Path>,
    window: Duration,
    rounds: usize,
) -> anyhow::Result<()> {
    let current = lifeboat_testkit::lifeboat_binary();
    let mut binaries = vec![("after", current, Figures::default())];
    if let Some(baseline) = baseline {
        println!("before: {}", baseline.display());
        binaries.insert(0, ("before", baseline.to_path_buf(), Figures::default()));
    }
    let mut ceilings = Vec::new();
    for round in 0..rounds {
        ceilings.push(raw_ceiling(
            &root.join(format!("ceiling-{round}.sqlite3")),
            1,
            window,
        )?);
        // Who goes first alternates, so a drift of the machine favours neither.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..binaries.len()).collect()
        } else {
            (0..binaries.len()).rev().collect()
        };
        for index in order {
            let (label, binary, figures) = &mut binaries[index];
            let dir = root.join(format!("writes-{label}-{round}"));
            measure(runtime, binary, &dir, window, figures)?;
        }
    }
    let ceiling = median(&ceilings);
    println!(
        "\n## The write path: medians of {rounds} rounds; one-row SQLite ceiling {ceiling:.0} rows/s ({})",
        list(&ceilings)
    );
    let header: Vec<&str> = binaries.iter().map(|(label, _, _)| *label).collect();
    println!(
        "| load | clients | {} | after ÷ ceiling | after p99 ms |",
        header
            .iter()
            .map(|l| format!("{l} ops/s"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}---|---|", "---|".repeat(header.len()));
    for (index, (op, clients)) in LOADS.into_iter().enumerate() {
        let rates: Vec<String> = binaries
            .iter()
            .map(|(_, _, f)| format!("{:.0}", median(&f.loads[index].0)))
            .collect();
        let after = &binaries[binaries.len() - 1].2.loads[index];
        println!(
            "| {} | {clients} | {} | {:.2}× | {:.2} |",
            load::name(op),
            rates.join(" | "),
            median(&after.0) / ceiling,
            median(&after.1)
        );
    }
    for (label, _, figures) in &binaries {
        let ratios: Vec<f64> = figures
            .alone
            .iter()
            .zip(&figures.followed)
            .map(|(alone, followed)| followed / alone)
            .collect();
        println!(
            "{label}: checkpoints at 16 clients with 100 event streams following one written session each ÷ alone: {:.2}× (rounds: {})",
            median(&ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (index, (op, clients)) in LOADS.into_iter().enumerate() {
            println!(
                "{label}: {} at {clients}: {}",
                load::name(op),
                list(&figures.loads[index].0)
            );
        }
    }
    Ok(())
}
