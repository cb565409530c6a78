//! A hash map in shards behind `Arc`s, for the tables control publishes as snapshots.
//!
//! A clone shares every shard, and a change copies only the shard it touches (copy on
//! write, `Arc::make_mut`), so publishing a snapshot after a change costs the change,
//! not the table: a pod's attachment among 10,000 copies 1/64 of the static entries
//! instead of all of them. A lookup costs one more dependent load (the shard's pointer)
//! than a plain map's.
//!
//! The shard is chosen by a hash of the key's own (`ShardKey`), mixed differently from
//! the maps' FxHash: keys that share a shard must not share the bits hashbrown takes
//! for its buckets and tags.

use rustc_hash::FxHashMap;
use std::hash::Hash;
use std::sync::Arc;

/// Shards per map: a power of two.
const SHARDS: usize = 64;

/// Keys that pick their shard.
pub trait ShardKey: Hash + Eq + Clone {
    /// A 64-bit hash of the key whose top bits are well mixed (they choose the shard).
    fn shard_hash(&self) -> u64;
}

/// The splitmix64 finaliser: every input bit moves every output bit.
#[inline(always)]
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl ShardKey for u64 {
    /// One multiply (Fibonacci hashing), with a constant unlike FxHash's: the FDB looks
    /// up two of these keys per packet.
    #[inline(always)]
    fn shard_hash(&self) -> u64 {
        self.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Sharded<K, V> {
    /// An array, not a slice: the shard index needs no bounds check.
    shards: Box<[Arc<FxHashMap<K, V>>; SHARDS]>,
    len: usize,
}

impl<K, V> Clone for Sharded<K, V> {
    /// Shares every shard (no entry is copied).
    fn clone(&self) -> Self {
        Sharded { shards: self.shards.clone(), len: self.len }
    }
}

impl<K: ShardKey, V: Clone> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded { shards: Box::new(std::array::from_fn(|_| Arc::new(FxHashMap::default()))), len: 0 }
    }
}

impl<K: ShardKey, V: Clone> Sharded<K, V> {
    #[inline(always)]
    fn shard(k: &K) -> usize {
        (k.shard_hash() >> (64 - SHARDS.trailing_zeros())) as usize
    }

    /// The value of `k`.
    #[inline]
    pub fn get(&self, k: &K) -> Option<&V> {
        self.shards[Self::shard(k)].get(k)
    }

    /// True if `k` has a value.
    #[inline]
    pub fn contains_key(&self, k: &K) -> bool {
        self.get(k).is_some()
    }

    /// Sets `k` to `v`; returns the old value. Copies the shard if a clone shares it.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let old = Arc::make_mut(&mut self.shards[Self::shard(&k)]).insert(k, v);
        self.len += usize::from(old.is_none());
        old
    }

    /// Removes `k`; returns its value. Copies the shard if a clone shares it and `k` is
    /// there.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let s = &mut self.shards[Self::shard(k)];
        if !s.contains_key(k) {
            return None;
        }
        let old = Arc::make_mut(s).remove(k);
        self.len -= usize::from(old.is_some());
        old
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, shard by shard.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// How many shards `self` and `other` share (the same memory, not equal copies).
    pub fn shards_shared_with(&self, other: &Self) -> usize {
        self.shards.iter().zip(other.shards.iter()).filter(|(a, b)| Arc::ptr_eq(a, b)).count()
    }
}

impl<K: ShardKey, V: Clone> FromIterator<(K, V)> for Sharded<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Sharded::default();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl<K: ShardKey, V: Clone + PartialEq> PartialEq for Sharded<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_clone_shares_shards_and_a_change_copies_one() {
        let mut a: Sharded<u64, u32> = (0..1000u64).map(|k| (k, k as u32)).collect();
        let b = a.clone();
        assert_eq!(a.shards_shared_with(&b), SHARDS);
        a.insert(5, 50);
        assert_eq!(a.shards_shared_with(&b), SHARDS - 1, "one shard copied");
        assert_eq!((a.get(&5), b.get(&5)), (Some(&50), Some(&5)), "the clone keeps its value");
        // Removing what is not there copies nothing.
        let c = a.clone();
        assert_eq!(a.remove(&5000), None);
        assert_eq!(a.shards_shared_with(&c), SHARDS);
    }

    #[test]
    fn keys_spread_over_the_shards() {
        // Sequential keys (MACs of pods, say) must not pile into a few shards.
        let m: Sharded<u64, ()> = (0..6400u64).map(|k| ((7 << 48) | k, ())).collect();
        let sizes: Vec<usize> = m.shards.iter().map(|s| s.len()).collect();
        assert!(sizes.iter().all(|&n| (50..=150).contains(&n)), "{sizes:?}");
    }

    proptest! {
        /// Any sequence of inserts and removes leaves the same entries as one plain
        /// map, and the clones taken along the way keep what they had.
        #[test]
        fn agrees_with_a_plain_map(ops in proptest::collection::vec((any::<bool>(), 0u64..200, any::<u8>()), 0..400)) {
            let mut m: Sharded<u64, u8> = Sharded::default();
            let mut plain: FxHashMap<u64, u8> = FxHashMap::default();
            let mut snapshots = Vec::new();
            for (i, (insert, k, v)) in ops.into_iter().enumerate() {
                if insert {
                    prop_assert_eq!(m.insert(k, v), plain.insert(k, v));
                } else {
                    prop_assert_eq!(m.remove(&k), plain.remove(&k));
                }
                if i % 50 == 0 {
                    snapshots.push((m.clone(), plain.clone()));
                }
            }
            prop_assert_eq!(m.len(), plain.len());
            prop_assert_eq!(m.iter().map(|(k, v)| (*k, *v)).collect::<FxHashMap<_, _>>(), plain);
            for (s, p) in snapshots {
                prop_assert_eq!(s.iter().map(|(k, v)| (*k, *v)).collect::<FxHashMap<_, _>>(), p);
            }
        }
    }
}
