//! Bounded top-k selection with a deterministic tie order.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// An id with a score. Ordered so that *greater is better*: higher score first, and on equal
/// scores the lower id (earlier in build order, or earlier in the list) first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// What is scored: a document id, or a position in a candidate list. Lower ids win ties.
    pub id: u32,
    /// Its score.
    pub score: f32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Keeps the best `k` of the [`Scored`] items pushed into it.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl TopK {
    /// An empty selection of at most `k` items.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16)),
        }
    }

    /// Offers an item; returns whether it is now among the best `k`.
    pub fn push(&mut self, item: Scored) -> bool {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(item));
            return true;
        }
        match self.heap.peek() {
            Some(Reverse(worst)) if item > *worst => {
                self.heap.pop();
                self.heap.push(Reverse(item));
                true
            }
            _ => false,
        }
    }

    /// The score an item must beat to enter, once `k` items are held (`None` before).
    pub fn threshold(&self) -> Option<f32> {
        if self.heap.len() < self.k {
            return None;
        }
        self.heap.peek().map(|worst| worst.0.score)
    }

    /// The items held, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Scored> + '_ {
        self.heap.iter().map(|r| r.0)
    }

    /// The best items, best first.
    pub fn into_sorted_vec(self) -> Vec<Scored> {
        // Sorting `Reverse` ascending puts the greatest `Scored` first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_with_ties_by_doc_order() {
        let mut top = TopK::new(3);
        for (doc, score) in [(5, 1.0), (1, 2.0), (2, 1.0), (3, 3.0), (0, 1.0), (4, 0.5)] {
            top.push(Scored { id: doc, score });
        }
        let docs: Vec<u32> = top.into_sorted_vec().iter().map(|s| s.id).collect();
        assert_eq!(docs, vec![3, 1, 0]);
    }

    #[test]
    fn zero_k_keeps_nothing() {
        let mut top = TopK::new(0);
        assert!(!top.push(Scored { id: 0, score: 1.0 }));
        assert!(top.into_sorted_vec().is_empty());
    }
}
