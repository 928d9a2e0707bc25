//! A set of fetched byte ranges: the heart of resumable downloads.
//!
//! Ranges are half-open `[start, end)`, kept sorted, non-empty and non-adjacent (touching
//! ranges merge). The store persists one set per file, so after a crash every byte already
//! fetched (and made durable) is known.

use serde::{Deserialize, Serialize};

/// A sorted set of disjoint half-open byte ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// A set holding `[0, len)` (empty when `len` is 0).
    pub fn prefix(len: u64) -> Self {
        let mut set = RangeSet::new();
        set.insert(0, len);
        set
    }

    /// Add `[start, end)`, merging with overlapping or touching ranges.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // First range that ends at or after `start` (could touch or overlap).
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        let mut new_start = start;
        let mut new_end = end;
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].0 <= end {
            new_start = new_start.min(self.ranges[last].0);
            new_end = new_end.max(self.ranges[last].1);
            last += 1;
        }
        self.ranges
            .splice(first..last, std::iter::once((new_start, new_end)));
    }

    /// Total bytes covered.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// The length of the contiguous range starting at 0 (0 if byte 0 is missing).
    pub fn contiguous_prefix(&self) -> u64 {
        match self.ranges.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// True when `[0, len)` is fully covered.
    pub fn is_complete(&self, len: u64) -> bool {
        len == 0 || self.contiguous_prefix() >= len
    }

    /// The ranges in `[0, len)` not yet covered, in order.
    pub fn missing(&self, len: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut pos = 0;
        for &(s, e) in &self.ranges {
            if s >= len {
                break;
            }
            if s > pos {
                gaps.push((pos, s));
            }
            pos = pos.max(e);
        }
        if pos < len {
            gaps.push((pos, len));
        }
        gaps
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Remove everything.
    pub fn clear(&mut self) {
        self.ranges.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_overlapping_and_touching() {
        let mut set = RangeSet::new();
        set.insert(10, 20);
        set.insert(30, 40);
        assert_eq!(set.ranges(), &[(10, 20), (30, 40)]);
        set.insert(20, 30);
        assert_eq!(set.ranges(), &[(10, 40)]);
        set.insert(0, 5);
        set.insert(50, 60);
        set.insert(4, 55);
        assert_eq!(set.ranges(), &[(0, 60)]);
        assert_eq!(set.covered(), 60);
    }

    #[test]
    fn empty_ranges_are_ignored() {
        let mut set = RangeSet::new();
        set.insert(5, 5);
        set.insert(7, 3);
        assert_eq!(set.covered(), 0);
        assert_eq!(set.contiguous_prefix(), 0);
    }

    #[test]
    fn missing_lists_the_gaps() {
        let mut set = RangeSet::new();
        set.insert(10, 20);
        set.insert(30, 40);
        assert_eq!(set.missing(50), vec![(0, 10), (20, 30), (40, 50)]);
        assert_eq!(set.missing(35), vec![(0, 10), (20, 30)]);
        assert!(RangeSet::prefix(50).missing(50).is_empty());
        assert!(RangeSet::prefix(50).is_complete(50));
        assert!(!set.is_complete(50));
    }

    #[test]
    fn contiguous_prefix_needs_byte_zero() {
        let mut set = RangeSet::new();
        set.insert(1, 10);
        assert_eq!(set.contiguous_prefix(), 0);
        set.insert(0, 1);
        assert_eq!(set.contiguous_prefix(), 10);
    }

    #[test]
    fn inserting_inside_an_existing_range_changes_nothing() {
        let mut set = RangeSet::prefix(100);
        set.insert(10, 20);
        assert_eq!(set.ranges(), &[(0, 100)]);
    }
}
