//! Segment bookkeeping for a file fetched over several `Range` connections at once.
//!
//! The table knows the file's length, the byte ranges nobody is fetching yet (`pending`), and
//! what each worker is fetching (`[cursor, end)`). A worker asks for work with
//! [`SegmentTable::next`]: a piece of a pending range if there is one, otherwise it **steals**
//! the back half of the largest remaining assignment, so a slow connection never leaves the
//! download crawling at 99 %. A worker reports every chunk with [`SegmentTable::advance`], which
//! also tells it where to stop (its end may have moved because of a steal). A failed worker
//! gives its remainder back with [`SegmentTable::release`].

use std::collections::BTreeMap;

use crate::ranges::RangeSet;

/// Identifies a worker (a connection) of one file.
pub type WorkerId = usize;

/// What one worker is fetching: bytes `[cursor, end)` are still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The next byte the worker will receive.
    pub cursor: u64,
    /// Where the worker stops.
    pub end: u64,
}

impl Assignment {
    fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.cursor)
    }
}

/// The segments of one file.
#[derive(Debug)]
pub struct SegmentTable {
    pending: Vec<(u64, u64)>,
    active: BTreeMap<WorkerId, Assignment>,
    piece: u64,
    min_steal: u64,
    /// Shrink pieces as pending work runs out: `(workers, floor)`, see [`SegmentTable::taper`].
    taper: Option<(u64, u64)>,
}

impl SegmentTable {
    /// A table for a file of `total` bytes of which `done` are already on disk. Pending work
    /// is handed out in pieces of at most `piece` bytes; an assignment is only split when both
    /// halves would be at least `min_steal` bytes.
    pub fn new(total: u64, done: &RangeSet, piece: u64, min_steal: u64) -> Self {
        SegmentTable {
            pending: done.missing(total),
            active: BTreeMap::new(),
            piece: piece.max(1),
            min_steal: min_steal.max(1),
            taper: None,
        }
    }

    /// Hand out pending work in pieces that shrink as it runs out: at most a share of what is
    /// pending (`pending / (2 × workers)`), never below `floor`. The workers then finish
    /// their last pieces at about the same time, and the contiguous prefix (which the writer
    /// hashes in order) trails the newest byte by a few small pieces at the end instead of a
    /// whole round of large ones, so the file is verified soon after its last byte.
    pub fn taper(mut self, workers: u64, floor: u64) -> Self {
        self.taper = Some((workers.max(1), floor.max(1)));
        self
    }

    /// The file now has `workers` connections: pending work tapers by their count.
    pub fn set_workers(&mut self, workers: u64) {
        if let Some((_, floor)) = self.taper {
            self.taper = Some((workers.max(1), floor));
        }
    }

    /// The size of the next piece of pending work.
    fn piece_now(&self) -> u64 {
        match self.taper {
            None => self.piece,
            Some((workers, floor)) => {
                let pending: u64 = self.pending.iter().map(|(s, e)| e - s).sum();
                // Whole 64 KiB blocks, so neighbouring pieces rarely share a page.
                let share = pending / (2 * workers) / (64 * 1024) * (64 * 1024);
                self.piece.min(share.max(floor))
            }
        }
    }

    /// Give `worker` exactly `[start, end)` (the range an already open response covers),
    /// taking it out of the pending ranges.
    pub fn claim(&mut self, worker: WorkerId, start: u64, end: u64) {
        self.remove_pending(start, end);
        self.active
            .insert(worker, Assignment { cursor: start, end });
    }

    fn remove_pending(&mut self, start: u64, end: u64) {
        let mut kept = Vec::with_capacity(self.pending.len() + 1);
        for &(s, e) in &self.pending {
            if e <= start || s >= end {
                kept.push((s, e));
                continue;
            }
            if s < start {
                kept.push((s, start));
            }
            if e > end {
                kept.push((end, e));
            }
        }
        self.pending = kept;
    }

    /// The next range for `worker`: a pending piece, or half of the largest assignment.
    /// `None` when there is nothing left worth taking.
    pub fn next(&mut self, worker: WorkerId) -> Option<(u64, u64)> {
        self.active.remove(&worker);
        let piece = self.piece_now();
        if let Some(&(start, end)) = self.pending.first() {
            let piece_end = end.min(start.saturating_add(piece));
            self.claim(worker, start, piece_end);
            return Some((start, piece_end));
        }
        self.steal(worker)
    }

    /// Split the largest assignment in two and give the back half to `thief`.
    pub fn steal(&mut self, thief: WorkerId) -> Option<(u64, u64)> {
        let (&victim, assignment) = self
            .active
            .iter()
            .filter(|(w, _)| **w != thief)
            .max_by_key(|(_, a)| a.remaining())?;
        if assignment.remaining() < 2 * self.min_steal {
            return None;
        }
        let mid = assignment.cursor + assignment.remaining() / 2;
        let end = assignment.end;
        self.active.get_mut(&victim).expect("victim is active").end = mid;
        self.active.insert(thief, Assignment { cursor: mid, end });
        Some((mid, end))
    }

    /// `worker` received `len` bytes at `offset`. Returns how many of them are its to write
    /// (fewer when a steal moved its end) and whether it is done with its assignment.
    pub fn advance(&mut self, worker: WorkerId, offset: u64, len: u64) -> (u64, bool) {
        let Some(assignment) = self.active.get_mut(&worker) else {
            return (0, true);
        };
        let keep = assignment.end.saturating_sub(offset).min(len);
        assignment.cursor = offset + keep;
        let done = assignment.cursor >= assignment.end;
        (keep, done)
    }

    /// `worker` stopped before its end (an error): its remainder becomes pending again.
    pub fn release(&mut self, worker: WorkerId) {
        if let Some(a) = self.active.remove(&worker) {
            if a.remaining() > 0 {
                let mut set = RangeSet::new();
                for &(s, e) in &self.pending {
                    set.insert(s, e);
                }
                set.insert(a.cursor, a.end);
                self.pending = set.ranges().to_vec();
            }
        }
    }

    /// Nothing pending and nobody fetching.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty() && self.active.values().all(|a| a.remaining() == 0)
    }

    /// Bytes not yet received (pending plus what active workers still expect).
    pub fn remaining(&self) -> u64 {
        self.pending.iter().map(|(s, e)| e - s).sum::<u64>()
            + self.active.values().map(Assignment::remaining).sum::<u64>()
    }

    /// Every byte range not yet received: pending, plus the rest of each assignment, in order.
    pub fn unfetched(&self) -> Vec<(u64, u64)> {
        let mut set = RangeSet::new();
        for &(s, e) in &self.pending {
            set.insert(s, e);
        }
        for a in self.active.values() {
            set.insert(a.cursor, a.end);
        }
        set.ranges().to_vec()
    }

    /// The assignment of `worker`, if any.
    pub fn assignment(&self, worker: WorkerId) -> Option<Assignment> {
        self.active.get(&worker).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn pending_work_is_split_into_pieces() {
        let mut table = SegmentTable::new(10 * MIB, &RangeSet::new(), 4 * MIB, MIB);
        assert_eq!(table.next(0), Some((0, 4 * MIB)));
        assert_eq!(table.next(1), Some((4 * MIB, 8 * MIB)));
        assert_eq!(table.next(2), Some((8 * MIB, 10 * MIB)));
        assert_eq!(table.remaining(), 10 * MIB);
    }

    #[test]
    fn done_ranges_are_skipped_on_resume() {
        let mut done = RangeSet::new();
        done.insert(0, 3 * MIB);
        done.insert(5 * MIB, 6 * MIB);
        let mut table = SegmentTable::new(8 * MIB, &done, 64 * MIB, MIB);
        assert_eq!(table.next(0), Some((3 * MIB, 5 * MIB)));
        assert_eq!(table.next(1), Some((6 * MIB, 8 * MIB)));
        assert_eq!(table.remaining(), 4 * MIB);
    }

    #[test]
    fn an_idle_worker_steals_the_back_half_of_the_largest_assignment() {
        let mut table = SegmentTable::new(16 * MIB, &RangeSet::new(), 64 * MIB, MIB);
        table.claim(0, 0, 16 * MIB);
        assert_eq!(table.advance(0, 0, 2 * MIB), (2 * MIB, false));
        // 14 MiB left for worker 0: the thief takes [9, 16).
        assert_eq!(table.next(1), Some((9 * MIB, 16 * MIB)));
        assert_eq!(
            table.assignment(0),
            Some(Assignment {
                cursor: 2 * MIB,
                end: 9 * MIB
            })
        );
        // Worker 0 had already received past its new end: it keeps only what is still its.
        assert_eq!(table.advance(0, 2 * MIB, 8 * MIB), (7 * MIB, true));
        assert_eq!(table.remaining(), 7 * MIB);
    }

    #[test]
    fn small_tails_are_not_split() {
        let mut table = SegmentTable::new(3 * MIB, &RangeSet::new(), 64 * MIB, 2 * MIB);
        table.claim(0, 0, 3 * MIB);
        assert_eq!(table.next(1), None);
    }

    #[test]
    fn released_work_is_merged_back_and_handed_out_again() {
        let mut table = SegmentTable::new(8 * MIB, &RangeSet::new(), 4 * MIB, MIB);
        assert_eq!(table.next(0), Some((0, 4 * MIB)));
        assert_eq!(table.next(1), Some((4 * MIB, 8 * MIB)));
        table.advance(0, 0, MIB);
        table.release(0);
        assert_eq!(table.next(2), Some((MIB, 4 * MIB)));
        table.advance(1, 4 * MIB, 4 * MIB);
        table.release(1);
        table.advance(2, MIB, 3 * MIB);
        table.release(2);
        assert!(table.is_done());
    }

    #[test]
    fn tapered_pieces_shrink_as_the_pending_work_runs_out() {
        let total = 1024 * MIB;
        let mut table =
            SegmentTable::new(total, &RangeSet::new(), 16 * MIB, 4 * MIB).taper(16, 2 * MIB);
        let mut sizes = Vec::new();
        let mut worker = 0;
        while let Some((start, end)) = table.next(worker % 16) {
            // Each piece is fetched whole before its worker asks again.
            table.advance(worker % 16, start, end - start);
            sizes.push(end - start);
            worker += 1;
        }
        assert!(table.is_done());
        assert_eq!(
            sizes.iter().sum::<u64>(),
            total,
            "every byte handed out once"
        );
        assert_eq!(sizes[0], 16 * MIB, "full pieces while plenty is pending");
        assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "never growing");
        assert!(*sizes.last().unwrap() <= 2 * MIB, "the floor at the end");
        // The last round (one piece per worker) is small.
        assert!(sizes[sizes.len() - 16..].iter().sum::<u64>() <= 40 * MIB);
    }

    #[test]
    fn claim_removes_the_claimed_range_from_pending() {
        let mut table = SegmentTable::new(10 * MIB, &RangeSet::new(), 64 * MIB, MIB);
        table.claim(0, 0, 10 * MIB);
        assert_eq!(table.remaining(), 10 * MIB);
        assert_eq!(table.next(1), Some((5 * MIB, 10 * MIB)));
    }
}
