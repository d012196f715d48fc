//! A recording: synthesised audio (a 440 Hz tone, 8 kHz, 16-bit mono) appended to an
//! asset in chunks every 100 ms, with heartbeats, and a checkpoint every second. Kill it
//! (SIGKILL) and run it again: it continues at the asset's real size, so the take has no
//! gap and no repeat; when the take is complete it is stored as a valid WAV file.
//!
//! `cargo run -p lifeboat-sdk --example recorder -- --url URL --token KEY`

use std::time::Duration;

use clap::Parser;
use lifeboat_sdk::{Checkpoint, Client, NewSession, RecoveryOption, Resumed};
use serde_json::json;

const RATE: u32 = 8_000;
const CHUNK_SAMPLES: u64 = 800;

#[derive(Parser)]
struct Args {
    /// The Lifeboat server.
    #[arg(long, default_value = "http://127.0.0.1:7433")]
    url: String,
    /// An API key with write scope.
    #[arg(long, env = "LIFEBOAT_TOKEN")]
    token: String,
    /// The session id (the same id continues the same take).
    #[arg(long, default_value = "take-1")]
    id: String,
    /// Seconds of audio to record.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// Sample `n` of the tone: the same bytes whatever run produces them.
fn sample(n: u64) -> [u8; 2] {
    let t = n as f64 / f64::from(RATE);
    let value = (t * 440.0 * std::f64::consts::TAU).sin() * 8_000.0;
    (value as i16).to_le_bytes()
}

/// A WAV header for `data_bytes` of 16-bit mono PCM at `RATE`.
fn wav_header(data_bytes: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes()); // PCM
    header.extend_from_slice(&1u16.to_le_bytes()); // mono
    header.extend_from_slice(&RATE.to_le_bytes());
    header.extend_from_slice(&(RATE * 2).to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_bytes.to_le_bytes());
    header
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(&args.url, &args.token);
    let total = args.seconds * u64::from(RATE);
    let new = NewSession::new("recording")
        .id(&args.id)
        .heartbeat_timeout_ms(2_000)
        .total_units(total);
    let session = match client
        .resume_or_start(new, RecoveryOption::Continue)
        .await?
    {
        Resumed::Started(session) => session,
        Resumed::Recovered {
            session,
            resume_from,
            ..
        } => {
            if let Some(checkpoint) = resume_from {
                println!("resumed from checkpoint seq={}", checkpoint.seq);
            }
            session
        }
        Resumed::Finished(_) => {
            println!("take {} is already complete", args.id);
            return Ok(());
        }
    };
    // The asset's size is the truth: the checkpoint may be up to a second behind it.
    let mut offset = session.asset_size("take.pcm").await?;
    println!("recording from sample {}", offset / 2);
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    while offset / 2 < total {
        ticks.tick().await;
        let first = offset / 2;
        let chunk: Vec<u8> = (first..(first + CHUNK_SAMPLES).min(total))
            .flat_map(sample)
            .collect();
        offset = session.append("take.pcm", offset, &chunk).await?;
        session.set_progress(offset / 2, Some("recording"));
        if (offset / 2) % u64::from(RATE) == 0 {
            // The checkpoint pins the take as it is now (its first `offset` bytes): a
            // recovery offers it only while those bytes are intact.
            session
                .checkpoint(
                    Checkpoint::item(&json!({"bytes": offset}))?
                        .completed_units(offset / 2)
                        .assets(&["take.pcm"]),
                )
                .await?;
        }
    }
    let pcm = client_get(&args, &format!("/sessions/{}/assets/take.pcm", args.id)).await?;
    let mut wav = wav_header(u32::try_from(pcm.len())?);
    wav.extend_from_slice(&pcm);
    session.upload("take.wav", &wav).await?;
    session
        .checkpoint(Checkpoint::stage("done", &json!({"bytes": pcm.len()}))?.assets(&["take.wav"]))
        .await?;
    session.complete().await?;
    println!("done: take.wav, {} bytes of audio", pcm.len());
    Ok(())
}

async fn client_get(args: &Args, path: &str) -> anyhow::Result<Vec<u8>> {
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1{path}", args.url))
        .bearer_auth(&args.token)
        .send()
        .await?
        .error_for_status()?;
    Ok(response.bytes().await?.to_vec())
}
