//! The stats page (`/stats`): the figures of `GET /api/v1/stats` for the signed-in key's
//! tenant, read through the same engine call and conversion as the API's handler, each
//! group as a small inline SVG bar chart with its numbers beside the bars.
//!
//! Bars are drawn here as coordinates and widths for the template; the page has no
//! `style` attribute and no script (its CSP allows neither), only presentation attributes
//! and classes of `dashboard.css`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use lifeboat::Status;
use lifeboat_api::{DistributionBody, StatsBody};
use serde::Serialize;

use super::auth::Signed;
use super::pages::duration;
use super::{Fail, render};
use crate::AppState;
use crate::convert::stats_body;

/// The longest bar, in the charts' user units (their `viewBox` is `CHART_WIDTH` wide; the
/// rest is room for the number after the bar).
const BAR_MAX: u64 = 250;
/// The width of every chart's `viewBox`.
const CHART_WIDTH: u32 = 340;
/// The height of one bar's row: its label above, the bar and its number below.
const ROW_HEIGHT: u32 = 38;

#[derive(Serialize)]
struct StatsPage<'a> {
    base: &'a str,
    charts: Vec<Chart>,
}

/// One chart: a titled group of bars, with an optional total shown beside its heading.
#[derive(Serialize)]
struct Chart {
    id: &'static str,
    title: &'static str,
    total: Option<Figure>,
    summary: String,
    width: u32,
    height: u32,
    bars: Vec<Bar>,
}

/// A number as shown, and where it comes from in `GET /api/v1/stats` (`data-stat`).
#[derive(Serialize)]
struct Figure {
    stat: String,
    value: u64,
    shown: String,
    /// For a duration: the exact milliseconds, as its tooltip.
    exact: Option<String>,
}

#[derive(Serialize)]
struct Bar {
    label: String,
    figure: Figure,
    y: u32,
    width: u64,
    /// Where the number starts: just after the bar's end.
    number_x: u64,
}

/// `GET /stats`: the tenant's figures as charts with their numbers.
pub(crate) async fn stats(State(state): State<AppState>, signed: Signed) -> Response {
    match stats_page(&state, &signed).await {
        Ok(page) => page,
        Err(fail) => fail.page(&signed.base),
    }
}

async fn stats_page(state: &AppState, signed: &Signed) -> Result<Response, Fail> {
    let body = stats_body(state.lifeboat.stats(&signed.tenant).await?);
    let context = StatsPage {
        base: &signed.base,
        charts: charts(&body),
    };
    Ok(render("stats.html", StatusCode::OK, context))
}

fn charts(body: &StatsBody) -> Vec<Chart> {
    let sessions = Status::ALL
        .iter()
        .map(|s| {
            let n = body.sessions.get(s.as_str()).copied().unwrap_or(0);
            (
                s.as_str().to_owned(),
                count(format!("sessions.{}", s.as_str()), n),
            )
        })
        .collect();
    let keyed = |prefix: &str, map: &std::collections::BTreeMap<String, u64>| {
        map.iter()
            .map(|(name, n)| (name.clone(), count(format!("{prefix}.{name}"), *n)))
            .collect()
    };
    let named = |pairs: &[(&str, &str, u64)]| {
        pairs
            .iter()
            .map(|(label, stat, n)| ((*label).to_owned(), count((*stat).to_owned(), *n)))
            .collect()
    };
    let r = &body.recoveries;
    let (c, a) = (&body.checkpoints, &body.assets);
    vec![
        chart("sessions", "Sessions by status", None, sessions),
        chart(
            "crashes",
            "Crashes by type",
            Some(count("crashes.total".to_owned(), body.crashes.total)),
            keyed("crashes.by_type", &body.crashes.by_type),
        ),
        chart(
            "recoveries",
            "Recoveries by option",
            Some(count("recoveries.total".to_owned(), r.total)),
            keyed("recoveries.by_option", &r.by_option),
        ),
        chart(
            "outcomes",
            "Recoveries by outcome",
            None,
            named(&[
                ("succeeded", "recoveries.succeeded", r.succeeded),
                ("failed", "recoveries.failed", r.failed),
                ("pending", "recoveries.pending", r.pending),
            ]),
        ),
        chart(
            "checkpoints",
            "Checkpoints",
            None,
            named(&[
                ("total", "checkpoints.total", c.total),
                ("invalid", "checkpoints.invalid", c.invalid),
            ]),
        ),
        chart(
            "assets",
            "Assets",
            None,
            named(&[
                ("total", "assets.total", a.total),
                ("ok", "assets.ok", a.ok),
                ("missing", "assets.missing", a.missing),
                ("corrupt", "assets.corrupt", a.corrupt),
            ]),
        ),
        chart(
            "detection",
            "Detection delay",
            None,
            durations("detection_delay_ms", &body.detection_delay_ms),
        ),
        chart(
            "work-lost",
            "Work lost",
            None,
            durations("work_lost_ms", &body.work_lost_ms),
        ),
    ]
}

fn count(stat: String, value: u64) -> Figure {
    Figure {
        stat,
        value,
        shown: value.to_string(),
        exact: None,
    }
}

/// p50, p99 and max, humanised, with the exact milliseconds as their tooltips.
fn durations(prefix: &str, d: &DistributionBody) -> Vec<(String, Figure)> {
    [("p50", d.p50), ("p99", d.p99), ("max", d.max)]
        .into_iter()
        .map(|(name, ms)| {
            let figure = Figure {
                stat: format!("{prefix}.{name}"),
                value: ms,
                shown: duration(ms),
                exact: Some(format!("{ms} ms")),
            };
            (name.to_owned(), figure)
        })
        .collect()
}

/// Lays `rows` out as bars whose widths are proportional to the largest value (a value
/// above zero is never drawn narrower than one unit).
fn chart(
    id: &'static str,
    title: &'static str,
    total: Option<Figure>,
    rows: Vec<(String, Figure)>,
) -> Chart {
    let largest = rows.iter().map(|(_, f)| f.value).max().unwrap_or(0);
    let summary = rows
        .iter()
        .map(|(label, f)| format!("{label} {}", f.shown))
        .collect::<Vec<_>>()
        .join(", ");
    let mut y = 0;
    let bars = rows
        .into_iter()
        .map(|(label, figure)| {
            let width = bar_width(figure.value, largest);
            let bar = Bar {
                label,
                figure,
                y,
                width,
                number_x: width + 6,
            };
            y += ROW_HEIGHT;
            bar
        })
        .collect();
    Chart {
        id,
        title,
        total,
        summary,
        width: CHART_WIDTH,
        height: y,
        bars,
    }
}

/// `value / largest` of `BAR_MAX`, rounded up; 0 when `largest` is 0.
fn bar_width(value: u64, largest: u64) -> u64 {
    if largest == 0 {
        return 0;
    }
    let scaled = (u128::from(value) * u128::from(BAR_MAX)).div_ceil(u128::from(largest));
    u64::try_from(scaled).unwrap_or(BAR_MAX)
}

#[cfg(test)]
mod tests {
    use super::bar_width;

    #[test]
    fn bars_are_proportional_to_the_largest() {
        assert_eq!(bar_width(0, 0), 0);
        assert_eq!(bar_width(0, 7), 0);
        assert_eq!(bar_width(7, 7), 250);
        assert_eq!(bar_width(1, 2), 125);
        assert_eq!(bar_width(1, 1_000_000), 1);
        assert_eq!(bar_width(u64::MAX, u64::MAX), 250);
    }
}
