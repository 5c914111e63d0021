//! A work queue across processes: one producer, three consumers, and one of
//! the consumers killed with SIGKILL half-way — yet no job is lost.
//!
//! The parent creates a segment with two channels as named roots, `jobs`
//! (the parent sends, the consumers receive) and `results` (the other way),
//! then runs this same program as three consumer processes. A consumer
//! receives a job, works on it (about a hundred microseconds of arithmetic), sends
//! the result, and only then acknowledges the job. When a third of the
//! results are in, the parent kills one consumer in the middle of a job.
//! The job it held was received but never acknowledged, so the channel
//! puts it back (here at once: the parent's `reclaim_dead` finds the dead
//! consumer and redelivers what it held) and another consumer does it —
//! at-least-once delivery: if the killed consumer had already sent its
//! result, that job is done twice.
//!
//! The parent checks that every job has a correct result, counts the
//! redelivered jobs (their results carry `redeliveries() > 0`) and the
//! duplicates, and asserts that they match what the channel counted.
//!
//! Run: `cargo run --release --example work_queue [-- JOBS]` (default 10,000).

use shmslab::bytemuck::{Pod, Zeroable};
use shmslab::{Error, Schema, Slab};
use std::process::{Child, Command};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

/// A job: its number and its input.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Job {
    id: u64,
    input: u64,
}

/// A job's result, and who computed it after how many redeliveries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Done {
    id: u64,
    output: u64,
    consumer: u64,
    redeliveries: u64,
}

/// What each consumer is doing: the job it works on, plus one (0: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
#[bytemuck(crate = "shmslab::bytemuck")]
struct Busy {
    c0: u64,
    c1: u64,
    c2: u64,
}
impl Schema for Busy {
    const SCHEMA_ID: Option<u64> = Some(0x776f_726b_7100_0001);
}

shmslab::atomic_fields! {
    /// `Busy`, field by field atomic.
    struct BusyAtomics for Busy { c0, c1, c2 }
}

impl BusyAtomics {
    fn of(&self, consumer: u64) -> &std::sync::atomic::AtomicU64 {
        [&self.c0, &self.c1, &self.c2][consumer as usize]
    }
}

const CONSUMERS: u64 = 3;
/// The consumer killed half-way.
const VICTIM: u64 = 1;
/// How long anyone waits for the others before giving up.
const PATIENCE: Duration = Duration::from_secs(60);

/// A job's work: some arithmetic, tens of microseconds of it.
fn work(input: u64) -> u64 {
    let mut x = input;
    for _ in 0..50_000 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 29;
    }
    x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, path, number] = args.as_slice() {
        if role == "consumer" {
            return consumer(path, number.parse()?);
        }
    }
    let jobs_total: u64 = match args.get(1) {
        None => 10_000,
        Some(s) => match s.replace([',', '_'], "").parse() {
            Ok(n) if n >= 3 && args.len() == 2 => n,
            _ => {
                eprintln!("usage: work_queue [JOBS]  (at least 3; default 10000)");
                std::process::exit(2)
            }
        },
    };

    let dir = tempfile::tempdir()?; // removed, segment and all, on return
    let path = dir.path().join("work_queue.shm");
    let slab = Slab::builder().create(&path)?;
    let jobs_h = slab.root_or_insert_channel::<Job>("jobs", 64)?;
    let results_h = slab.root_or_insert_channel::<Done>("results", 256)?;
    let busy = slab.atomic(slab.root_or_insert("busy", Busy::default())?)?;
    let (jobs, results) = (slab.channel(jobs_h)?, slab.channel(results_h)?);
    println!(
        "shmslab work queue: 1 producer, {CONSUMERS} consumer processes, {} jobs, one segment at {}",
        thousands(jobs_total),
        path.display()
    );

    let exe = std::env::current_exe()?;
    let mut consumers: Vec<Option<Child>> = (0..CONSUMERS)
        .map(|k| {
            Command::new(&exe)
                .arg("consumer")
                .arg(&path)
                .arg(k.to_string())
                .spawn()
                .map(Some)
        })
        .collect::<Result<_, _>>()?;

    let started = Instant::now();
    let mut seen = vec![0u32; jobs_total as usize];
    let (mut distinct, mut duplicates, mut redelivered_results) = (0u64, 0u64, 0u64);
    let mut per_consumer = [0u64; CONSUMERS as usize];
    let mut killed_at = None;
    // The victim's job (plus one) when a third of the jobs were done.
    let mut aim: Option<u64> = None;
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        // The producer: a thread of the parent (any process could be).
        let producer = s.spawn(move || -> shmslab::Result<()> {
            for id in 0..jobs_total {
                jobs.send(Job {
                    id,
                    input: id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
                })?;
            }
            Ok(())
        });
        // The collector: every result, checked.
        while distinct < jobs_total {
            if started.elapsed() > PATIENCE {
                return Err(format!(
                    "only {distinct} of {jobs_total} jobs done after {PATIENCE:?}"
                )
                .into());
            }
            let Some(d) = results.recv_timeout(Duration::from_millis(100))? else {
                continue;
            };
            let r = d.value();
            d.ack()?;
            let input = r.id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            assert_eq!(r.output, work(input), "a wrong result for job {}", r.id);
            per_consumer[r.consumer as usize] += 1;
            if r.redeliveries > 0 {
                redelivered_results += 1;
            }
            let n = &mut seen[r.id as usize];
            *n += 1;
            if *n == 1 {
                distinct += 1;
            } else {
                duplicates += 1;
            }
            // A third done: kill the victim in the middle of a job, just
            // after it starts a new one (or, should it never, at the end).
            if killed_at.is_some() || distinct < jobs_total / 3 {
                continue;
            }
            let now_on = busy.of(VICTIM).load(SeqCst);
            let before = *aim.get_or_insert(now_on);
            let fresh = now_on != 0 && now_on != before;
            if fresh || distinct == jobs_total {
                let job = now_on.checked_sub(1).filter(|_| fresh);
                let mut victim = consumers[VICTIM as usize].take().expect("the victim runs");
                let killed = victim.kill(); // SIGKILL
                victim.wait()?;
                killed?;
                let report = slab.reclaim_dead()?;
                println!(
                    "  killed consumer {VICTIM} (SIGKILL) after {} results, {}; \
                     reclaim_dead: {} dead process(es) cleared, {} message(s) put back",
                    thousands(distinct),
                    job.map_or("between jobs".into(), |j| format!("while on job {j}")),
                    report.peers,
                    report.redelivered
                );
                killed_at = Some(job);
            }
        }
        producer.join().expect("the producer thread")?;
        Ok(())
    })?;
    let took = started.elapsed();

    // Every job done: close the queue; the consumers drain it and exit.
    jobs.close()?;
    // Results after every job had one: duplicates (counted, not needed).
    let late_results = |duplicates: &mut u64, redelivered: &mut u64| -> shmslab::Result<()> {
        while let Some(d) = results.try_recv()? {
            let r = d.value();
            d.ack()?;
            *duplicates += 1;
            if r.redeliveries > 0 {
                *redelivered += 1;
            }
        }
        Ok(())
    };
    let deadline = Instant::now() + PATIENCE;
    for (k, c) in consumers.iter_mut().enumerate() {
        let Some(c) = c else { continue };
        loop {
            if let Some(status) = c.try_wait()? {
                if !status.success() {
                    return Err(format!("consumer {k} failed: {status}").into());
                }
                break;
            }
            if Instant::now() > deadline {
                c.kill()?;
                return Err(format!("consumer {k} did not exit").into());
            }
            // Late duplicates may still come: keep the results flowing.
            late_results(&mut duplicates, &mut redelivered_results)?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    late_results(&mut duplicates, &mut redelivered_results)?;

    let st = jobs.stats()?;
    assert!(seen.iter().all(|&n| n >= 1), "a job was lost");
    assert_eq!(distinct, jobs_total);
    assert_eq!(st.sent, jobs_total, "{st:?}");
    assert_eq!(st.acked, jobs_total, "each job acknowledged once: {st:?}");
    assert_eq!((st.queued, st.in_flight), (0, 0), "{st:?}");
    assert!(killed_at.is_some(), "the victim was killed");
    // The killed consumer held at most one job: put back once, and done
    // again by another consumer (whose result says it was redelivered).
    assert!(st.redelivered <= 1, "{st:?}");
    assert_eq!(redelivered_results, st.redelivered, "{st:?}");
    assert!(
        duplicates <= st.redelivered,
        "a job done twice was not redelivered"
    );
    println!(
        "  {} jobs in {took:.2?}: every one done, none lost; results per consumer {per_consumer:?}",
        thousands(jobs_total)
    );
    println!(
        "  redelivered: {} ({}), done twice: {duplicates}",
        st.redelivered,
        match (st.redelivered, killed_at.flatten()) {
            (0, Some(_)) => "the killed consumer had acknowledged its job just before the kill",
            (0, None) => "the killed consumer held no job: it was killed between jobs",
            _ => "the job the killed consumer held, done again by another consumer",
        }
    );
    slab.reclaim_dead()?;
    assert!(slab.check()?.is_consistent());
    println!("the segment is consistent; done");
    Ok(())
}

/// A consumer: receive a job, work, send the result, acknowledge; until the
/// queue is closed.
fn consumer(path: &str, number: u64) -> Result<(), Box<dyn std::error::Error>> {
    let slab = Slab::attach(path)?;
    let jobs = slab.channel(slab.root_channel::<Job>("jobs")?.ok_or("no jobs root")?)?;
    let results = slab.channel(
        slab.root_channel::<Done>("results")?
            .ok_or("no results root")?,
    )?;
    let busy = slab.atomic(slab.root::<Busy>("busy")?.ok_or("no busy root")?)?;
    let mut idle_since = Instant::now();
    loop {
        let d = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(d)) => d,
            Ok(None) if idle_since.elapsed() < PATIENCE => continue,
            Ok(None) => return Err("no job for a minute".into()),
            Err(Error::ChannelClosed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let job = d.value();
        busy.of(number).store(job.id + 1, SeqCst);
        let output = work(job.input);
        if !results.send_timeout(
            Done {
                id: job.id,
                output,
                consumer: number,
                redeliveries: d.redeliveries() as u64,
            },
            PATIENCE,
        )? {
            return Err("the results queue stayed full".into());
        }
        busy.of(number).store(0, SeqCst);
        d.ack()?; // only now is the job done for good
        idle_since = Instant::now();
    }
}

/// `n` with thousands separated by commas.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}
