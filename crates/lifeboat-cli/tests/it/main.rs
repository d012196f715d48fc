//! Integration tests of the `lifeboat` binary and server: real HTTP on loopback, a real
//! SQLite file in a temp dir, real processes killed with SIGKILL. One test binary.

mod assets;
mod bounds;
mod bucket;
mod cleanup;
mod crash;
mod dashboard;
mod dashboard_actions;
mod dashboard_live;
mod dashboard_projects;
mod dashboard_stats;
mod errors;
mod events;
mod faults;
mod harness;
mod idempotency;
mod lifecycle;
mod matrix;
mod postgres;
mod projects;
mod promises;
mod recovery;
mod surface;
mod tenancy;
mod three_nodes;
mod tokens;
mod transfer;
mod upgrade;
