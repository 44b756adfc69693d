//! The duplicate guard: joined event ids, oldest join first.
//!
//! Ids leave only from the front (by age or by the size bound), so the ids
//! sit in a ring (`VecDeque`) and the index maps an id to its absolute
//! position in that ring (`head` is the absolute position of the front).

use std::collections::VecDeque;
use std::hash::BuildHasher;

use compact_str::CompactString;
use hashbrown::{DefaultHashBuilder, HashTable};

pub struct Guard {
    entries: VecDeque<(CompactString, i64)>,
    head: u64,
    index: HashTable<u64>,
    hasher: DefaultHashBuilder,
}

impl Guard {
    pub fn new() -> Self {
        Guard {
            entries: VecDeque::new(),
            head: 0,
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        let hash = self.hasher.hash_one(id);
        let (entries, head) = (&self.entries, self.head);
        self.index
            .find(hash, |&at| entries[(at - head) as usize].0 == id)
            .is_some()
    }

    pub fn push(&mut self, id: CompactString, joined_at_ms: i64) {
        let hash = self.hasher.hash_one(id.as_str());
        let at = self.head + self.entries.len() as u64;
        self.entries.push_back((id, joined_at_ms));
        let (entries, head, hasher) = (&self.entries, self.head, &self.hasher);
        self.index.insert_unique(hash, at, |&other| {
            hasher.hash_one(entries[(other - head) as usize].0.as_str())
        });
    }

    /// When the oldest id was joined, if any.
    pub fn oldest_ms(&self) -> Option<i64> {
        self.entries.front().map(|entry| entry.1)
    }

    pub fn newest_ms(&self) -> Option<i64> {
        self.entries.back().map(|entry| entry.1)
    }

    pub fn pop_oldest(&mut self) {
        let Some((id, _)) = self.entries.front() else {
            return;
        };
        let hash = self.hasher.hash_one(id.as_str());
        let head = self.head;
        if let Ok(entry) = self.index.find_entry(hash, |&at| at == head) {
            entry.remove();
        }
        self.entries.pop_front();
        self.head += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = &(CompactString, i64)> {
        self.entries.iter()
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(CompactString, i64)>()
            + self.index.capacity() * 9
            + self
                .entries
                .iter()
                .filter(|e| e.0.is_heap_allocated())
                .map(|e| e.0.capacity())
                .sum::<usize>()
    }
}
