//! Fuzzing on the stable toolchain: every decoder is fed mutants of its golden frames and must
//! answer each one with a value or a clean error, never a panic. Where an encoder exists, what
//! was decoded must also survive being encoded and decoded again, and every error must turn
//! into a reply that is valid JSON.
//!
//! Coverage-guided fuzzers (cargo-fuzz) need nightly; this is the stable substitute: a seeded
//! mutator ([`mutate`]) and a corpus that keeps the mutants a decoder accepted, so that later
//! mutations start from inputs that already got past the first checks.
//!
//! Each decoder is one test, so `cargo test` runs a smoke of each (a few thousand inputs).
//! `scripts/fuzz.sh N` runs N inputs per decoder in release mode. Environment:
//! - `FUZZ_INPUTS`: inputs per decoder (default [`SMOKE_INPUTS`]);
//! - `FUZZ_SEED`: the RNG seed (printed, so that a run can be repeated). `cargo test` uses
//!   [`SMOKE_SEED`], so that the suite is the same on every run and a red CI run is about the
//!   change under test; `scripts/fuzz.sh` takes a new seed from the clock each time, to explore.
//! - `FUZZ_REPLAY`: a file to run through the decoder's test instead (no catching of panics).
//!
//! A failing input is written to `target/fuzz-failures/<decoder>-<n>.bin`; replay it with
//! `FUZZ_REPLAY=target/fuzz-failures/<decoder>-<n>.bin cargo test --lib fuzz::<module>::<test>`.

mod d1;
mod export;
mod livestore;
mod mutate;
mod pocket;
mod synckit;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use mutate::Mutator;

/// Inputs per decoder in a plain `cargo test`.
const SMOKE_INPUTS: u64 = 2_000;

/// The RNG seed of a plain `cargo test`.
const SMOKE_SEED: u64 = 2;

/// Accepted mutants kept for further mutation, besides the seeds.
const CORPUS_LIMIT: usize = 512;

/// Accepted mutants larger than this are not kept: big inputs slow every later mutant down.
const CORPUS_ENTRY_LIMIT: usize = 8 * 1024;

/// Failures after which a run stops (one bug tends to fail thousands of inputs).
const MAX_FAILURES: usize = 10;

/// What a decoder made of an input; the run counts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected,
}

/// Runs `target` on the seeds, then on mutants of them, for `FUZZ_INPUTS` inputs in all. A
/// target checks its properties with `assert!`; a panic is a failure.
fn run(name: &str, seeds: Vec<Vec<u8>>, mut target: impl FnMut(&[u8]) -> Verdict) {
    let inputs: u64 =
        std::env::var("FUZZ_INPUTS").ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(SMOKE_INPUTS);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(SMOKE_SEED);
    if let Ok(path) = std::env::var("FUZZ_REPLAY") {
        let input = std::fs::read(&path).unwrap_or_else(|e| panic!("FUZZ_REPLAY={path}: {e}"));
        println!("fuzz {name}: {path} → {:?}", target(&input));
        return;
    }
    assert!(!seeds.is_empty(), "{name}: no seeds");
    for (i, s) in seeds.iter().enumerate() {
        assert_eq!(target(s), Verdict::Accepted, "{name}: seed {i} is not accepted: {}", String::from_utf8_lossy(s));
    }
    let dictionary = mutate::dictionary(&seeds);
    let mutator = Mutator::new(&dictionary);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut corpus = seeds;
    let seed_count = corpus.len();
    let mut failures: Vec<String> = Vec::new();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let started = Instant::now();
    let mut input = Vec::new();
    let mut done = 0u64;
    while done < inputs && failures.len() < MAX_FAILURES {
        let base = &corpus[rng.random_range(0..corpus.len())];
        let other = &corpus[rng.random_range(0..corpus.len())];
        input.clear();
        input.extend_from_slice(base);
        mutator.mutate(&mut rng, &mut input, other);
        done += 1;
        if inputs >= 1_000_000 && done % (inputs / 10) == 0 {
            eprintln!("fuzz {name}: {done} inputs after {:.0} s", started.elapsed().as_secs_f64());
        }
        match catch_unwind(AssertUnwindSafe(|| target(&input))) {
            Ok(Verdict::Accepted) => {
                accepted += 1;
                if input.len() <= CORPUS_ENTRY_LIMIT {
                    if corpus.len() < seed_count + CORPUS_LIMIT {
                        corpus.push(input.clone());
                    } else {
                        let slot = rng.random_range(seed_count..corpus.len());
                        corpus[slot].clone_from(&input);
                    }
                }
            }
            Ok(Verdict::Rejected) => rejected += 1,
            Err(_) => failures.push(save_failure(name, failures.len(), &input)),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {done} inputs in {secs:.1} s ({:.0}/s), {accepted} accepted, {rejected} rejected, {} failures, FUZZ_SEED={seed}",
        done as f64 / secs.max(1e-9),
        failures.len(),
    );
    assert!(failures.is_empty(), "{name}: {} inputs panicked (FUZZ_SEED={seed}): {failures:?}", failures.len());
}

fn save_failure(name: &str, n: usize, input: &[u8]) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    let path = dir.join(format!("{name}-{n}.bin"));
    if std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)).is_err() {
        return format!("{:?}", String::from_utf8_lossy(input));
    }
    path.display().to_string()
}

/// Whether `text` is one JSON value: every reply the server builds must be.
fn assert_json(text: &str) {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        panic!("not JSON ({e}): {text}");
    }
}

/// `bytes` as text the way a WebSocket text frame carries it (always UTF-8); non-UTF-8 mutants
/// are read lossily so that they still reach the decoder.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn seeds_of<S: AsRef<[u8]>>(seeds: impl IntoIterator<Item = S>) -> Vec<Vec<u8>> {
    seeds.into_iter().map(|s| s.as_ref().to_vec()).collect()
}
