//! The tiered merge policy: which sealed segments to merge next.
//!
//! As in Lucene's and tantivy's log-structured policies, segments are grouped in tiers by
//! their live documents (tier `t` holds segments of `floor · factor^t` to
//! `floor · factor^(t+1)` documents, everything below `floor` in tier 0); once a tier holds
//! `factor` segments, its `factor` smallest are merged into one segment of the next tier. So
//! an index of `n` documents keeps about `factor · log_factor(n / floor)` segments at most,
//! and each document is rewritten about `log_factor(n / floor)` times. A segment with at least
//! `max_deleted` of its documents deleted is merged on its own first, dropping them.

/// How segments are chosen for merging.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MergePolicy {
    /// Segments merged at once, and the size ratio between tiers (≥ 2).
    pub factor: usize,
    /// Live documents below which every segment counts as the smallest tier.
    pub floor_docs: u64,
    /// Share of deleted documents (0–1) past which a segment is rewritten without them.
    pub max_deleted: f64,
}

impl Default for MergePolicy {
    fn default() -> Self {
        MergePolicy {
            factor: 8,
            floor_docs: 10_000,
            max_deleted: 0.3,
        }
    }
}

/// A segment as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize {
    /// Documents, deleted ones included.
    pub docs: u64,
    /// Deleted documents.
    pub deleted: u64,
}

impl SegmentSize {
    fn live(&self) -> u64 {
        self.docs.saturating_sub(self.deleted)
    }
}

impl MergePolicy {
    /// The tier of a segment of `live` documents.
    fn tier(&self, live: u64) -> u32 {
        let mut tier = 0;
        let mut bound = self.floor_docs.max(1).saturating_mul(self.factor as u64);
        while live >= bound {
            tier += 1;
            bound = bound.saturating_mul(self.factor as u64);
        }
        tier
    }

    /// The segments (positions in `sizes`) to merge next, or `None` when none need it.
    pub fn choose(&self, sizes: &[SegmentSize]) -> Option<Vec<usize>> {
        let factor = self.factor.max(2);
        if let Some(i) = sizes
            .iter()
            .position(|s| s.deleted > 0 && s.deleted as f64 >= self.max_deleted * s.docs as f64)
        {
            return Some(vec![i]);
        }
        let mut by_tier: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for (i, s) in sizes.iter().enumerate() {
            by_tier.entry(self.tier(s.live())).or_default().push(i);
        }
        let (_, mut members) = by_tier.into_iter().find(|(_, m)| m.len() >= factor)?;
        members.sort_by_key(|&i| (sizes[i].live(), i));
        members.truncate(factor);
        members.sort_unstable();
        Some(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(docs: &[u64]) -> Vec<SegmentSize> {
        docs.iter()
            .map(|&docs| SegmentSize { docs, deleted: 0 })
            .collect()
    }

    #[test]
    fn full_tiers_merge_their_smallest_and_deletes_are_expunged() {
        let policy = MergePolicy {
            factor: 3,
            floor_docs: 100,
            max_deleted: 0.5,
        };
        // Tier 0 (< 300): 3 segments → merged; tier 1 (300..900) holds 2.
        assert_eq!(
            policy.choose(&sizes(&[500, 10, 400, 250, 20])),
            Some(vec![1, 3, 4])
        );
        assert_eq!(policy.choose(&sizes(&[500, 10, 400, 250])), None);
        // Four in tier 0: the three smallest.
        assert_eq!(
            policy.choose(&sizes(&[50, 40, 200, 30])),
            Some(vec![0, 1, 3])
        );
        let mut with_deletes = sizes(&[1000, 10]);
        with_deletes[0].deleted = 500;
        assert_eq!(policy.choose(&with_deletes), Some(vec![0]));

        // Simulated growth: the segment count stays within factor per tier.
        let mut segments: Vec<u64> = Vec::new();
        let mut written = 0;
        for seal in 0..500u64 {
            // Seals of 50 to 149 documents.
            segments.push(50 + seal % 100);
            written += 50 + seal % 100;
            while let Some(chosen) = policy.choose(&sizes(&segments)) {
                let merged: u64 = chosen.iter().map(|&i| segments[i]).sum();
                for &i in chosen.iter().rev() {
                    segments.remove(i);
                }
                segments.push(merged);
            }
        }
        assert_eq!(segments.iter().sum::<u64>(), written);
        let tiers = (written as f64 / 100.0).log(3.0).ceil() as usize + 1;
        assert!(segments.len() <= 2 * tiers, "{segments:?}");
    }
}
