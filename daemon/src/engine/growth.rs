//! How many connections a segmented file uses.
//!
//! A file split into segments starts with `segments` connections. When every connection is
//! capped by the server (a CDN that limits each connection, not the link), more connections
//! mean more throughput, and a fixed count leaves it on the table: aria2c stops at 16. So the
//! segmented loop asks a [`Growth`] every tick whether to add connections. It measures the
//! file's throughput over a window after each change and adds connections (half as many as
//! run, up to a ceiling) only while
//!
//! - the last step paid: the connections it added brought at least half of what the ones before
//!   them carried on average (a link that is full, or a server that shares one limit among
//!   all of a client's connections, stops the growth after one step);
//! - the writer keeps up: its queue was mostly empty over the window (when hashing and writing
//!   set the pace, another connection only adds contention);
//! - enough of the file is left to repay a connection's setup (a second or more at the
//!   measured rate).
//!
//! It never removes a connection: the ones it added are as good as the first ones.

use std::time::{Duration, Instant};

/// Time after a change before its effect is measured (connection setup, TCP slow start).
const SETTLE: Duration = Duration::from_millis(300);
/// How long the throughput is measured at one connection count.
const WINDOW: Duration = Duration::from_millis(400);
/// A step pays when its connections bring at least this share of the average connection's.
const STEP_MUST_PAY: f64 = 0.5;
/// The writer is the bottleneck when its queue was, on average, fuller than this.
const WRITER_BUSY: f64 = 0.5;
/// A step is taken only if the rest of the file takes at least this long at the measured rate.
const MIN_TIME_LEFT: Duration = Duration::from_secs(1);

/// The throughput measured at one connection count.
#[derive(Debug, Clone, Copy)]
struct Measured {
    workers: usize,
    bytes_per_sec: f64,
}

/// Where the controller is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for the connections of the last change to get going.
    Settling { until: Instant },
    /// Measuring since `since`, when `received` bytes had arrived; the writer queue's fill
    /// summed over `samples` ticks.
    Measuring {
        since: Instant,
        received: u64,
        fill_sum: f64,
        samples: u32,
    },
    /// No more growth for this attempt.
    Settled,
}

/// What one tick of the segmented loop reports.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// When the tick ran.
    pub now: Instant,
    /// Bytes received by all connections of this attempt so far.
    pub received: u64,
    /// Bytes of the file still to fetch.
    pub remaining: u64,
    /// How full the writer's queue is (0 empty, 1 full).
    pub writer_queue_fill: f64,
}

/// Decides when a segmented file gets more connections (see the module docs).
#[derive(Debug)]
pub struct Growth {
    workers: usize,
    ceiling: usize,
    last: Option<Measured>,
    phase: Phase,
}

impl Growth {
    /// A file running `workers` connections since `now`, which may grow to `ceiling`.
    pub fn new(workers: usize, ceiling: usize, now: Instant) -> Self {
        let phase = if ceiling > workers {
            Phase::Settling {
                until: now + SETTLE,
            }
        } else {
            Phase::Settled
        };
        Growth {
            workers,
            ceiling,
            last: None,
            phase,
        }
    }

    /// The connections the file is to have now.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Take one tick's observation; returns how many connections to add now (usually 0).
    pub fn observe(&mut self, seen: Observation) -> usize {
        match self.phase {
            Phase::Settled => 0,
            Phase::Settling { until } => {
                if seen.now >= until {
                    self.phase = Phase::Measuring {
                        since: seen.now,
                        received: seen.received,
                        fill_sum: 0.0,
                        samples: 0,
                    };
                }
                0
            }
            Phase::Measuring {
                since,
                received,
                fill_sum,
                samples,
            } => {
                let fill_sum = fill_sum + seen.writer_queue_fill.clamp(0.0, 1.0);
                let samples = samples + 1;
                let elapsed = seen.now.saturating_duration_since(since);
                if elapsed < WINDOW {
                    self.phase = Phase::Measuring {
                        since,
                        received,
                        fill_sum,
                        samples,
                    };
                    return 0;
                }
                let measured = Measured {
                    workers: self.workers,
                    bytes_per_sec: seen.received.saturating_sub(received) as f64
                        / elapsed.as_secs_f64(),
                };
                let step = self.step_after(measured, fill_sum / f64::from(samples), seen.remaining);
                self.last = Some(measured);
                if step == 0 {
                    self.phase = Phase::Settled;
                } else {
                    self.workers += step;
                    self.phase = Phase::Settling {
                        until: seen.now + SETTLE,
                    };
                }
                step
            }
        }
    }

    /// How many connections to add after measuring `now` (0: stop growing).
    fn step_after(&self, now: Measured, writer_queue_fill: f64, remaining: u64) -> usize {
        if let Some(before) = self.last {
            let per_connection = before.bytes_per_sec / before.workers.max(1) as f64;
            let added = now.workers.saturating_sub(before.workers) as f64;
            let gain = now.bytes_per_sec - before.bytes_per_sec;
            if gain < STEP_MUST_PAY * added * per_connection {
                tracing::debug!(
                    workers = now.workers,
                    rate = now.bytes_per_sec,
                    before = before.bytes_per_sec,
                    "more connections did not pay; staying"
                );
                return 0;
            }
        }
        if writer_queue_fill > WRITER_BUSY || now.bytes_per_sec <= 0.0 {
            return 0;
        }
        if (remaining as f64) < now.bytes_per_sec * MIN_TIME_LEFT.as_secs_f64() {
            return 0;
        }
        let step = (self.workers / 2)
            .max(1)
            .min(self.ceiling.saturating_sub(self.workers));
        if step > 0 {
            tracing::debug!(
                workers = self.workers,
                step,
                rate = now.bytes_per_sec,
                "each connection looks capped; adding connections"
            );
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    /// Drive a controller with a server model: `rate(workers)` bytes per second, 100 ms ticks,
    /// a writer queue fill, a file of `total` bytes. Returns the connection count at each
    /// growth step and the last count.
    fn drive(
        start: usize,
        ceiling: usize,
        total: u64,
        writer_queue_fill: f64,
        rate: impl Fn(usize) -> f64,
    ) -> (Vec<usize>, usize) {
        let t0 = Instant::now();
        let mut growth = Growth::new(start, ceiling, t0);
        let mut received = 0f64;
        let mut steps = Vec::new();
        let tick = Duration::from_millis(100);
        for i in 1..=200u32 {
            received += rate(growth.workers()) * tick.as_secs_f64();
            let received_now = (received as u64).min(total);
            let added = growth.observe(Observation {
                now: t0 + tick * i,
                received: received_now,
                remaining: total - received_now,
                writer_queue_fill,
            });
            if added > 0 {
                steps.push(growth.workers());
            }
            if received_now == total {
                break;
            }
        }
        (steps, growth.workers())
    }

    #[test]
    fn connections_that_are_each_capped_grow_to_the_ceiling() {
        // 25 MiB/s per connection, nothing else in the way: 16 → 24 → 32 (the ceiling).
        let (steps, last) = drive(16, 32, 4 << 30, 0.0, |n| n as f64 * 25.0 * MIB);
        assert_eq!(steps, vec![24, 32]);
        assert_eq!(last, 32);
    }

    #[test]
    fn a_full_link_stops_the_growth_after_one_step() {
        // The link carries 400 MiB/s however many connections share it.
        let (steps, last) = drive(16, 64, 4 << 30, 0.0, |_| 400.0 * MIB);
        assert_eq!(steps, vec![24]);
        assert_eq!(last, 24);
    }

    #[test]
    fn a_step_that_brings_little_stops_the_growth() {
        // Up to 20 connections are capped; past that the link is full.
        let (steps, last) = drive(8, 64, 4 << 30, 0.0, |n| n.min(20) as f64 * 10.0 * MIB);
        assert_eq!(steps, vec![12, 18, 27]);
        assert_eq!(last, 27);
    }

    #[test]
    fn a_busy_writer_means_no_more_connections() {
        let (steps, last) = drive(16, 32, 4 << 30, 0.9, |n| n as f64 * 25.0 * MIB);
        assert!(steps.is_empty());
        assert_eq!(last, 16);
    }

    #[test]
    fn no_connection_is_added_near_the_end_of_a_file() {
        // 16 × 25 MiB/s with 300 MiB in all: less than a second is left when it is measured.
        let (steps, _) = drive(16, 32, 300 << 20, 0.0, |n| n as f64 * 25.0 * MIB);
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn a_ceiling_at_the_start_count_means_no_growth() {
        let (steps, last) = drive(8, 8, 4 << 30, 0.0, |n| n as f64 * 25.0 * MIB);
        assert!(steps.is_empty());
        assert_eq!(last, 8);
        // A stalled transfer (no bytes) adds nothing either.
        let (steps, _) = drive(8, 32, 4 << 30, 0.0, |_| 0.0);
        assert!(steps.is_empty());
    }
}
