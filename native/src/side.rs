//! The pending records of one side of the join, by event id and by deadline.
//!
//! Records live in a slab (`slots`) with a free list; the event-id index is a
//! `hashbrown::HashTable` of slot numbers, so an entry costs its slot plus a
//! few bytes of index. Deadline order is `(timestamp_ms, insertion sequence)`:
//! records arriving in timestamp order go to a deque, which stays sorted; the
//! others to a heap. Removing a record by id leaves its deque or heap entry
//! behind; an entry is live only while its slot holds the same generation, and
//! the structures are compacted once stale entries outnumber live ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;

use compact_str::CompactString;
use hashbrown::{DefaultHashBuilder, HashTable};

/// Stale deque and heap entries tolerated beyond twice the live count.
pub const INDEX_SLACK: usize = 64;

pub struct Slot<T> {
    pub id: CompactString,
    pub timestamp_ms: i64,
    pub data: T,
    generation: u32,
    live: bool,
}

/// A record taken out of a side: its id, timestamp and payload.
pub struct Taken<T> {
    pub id: CompactString,
    pub timestamp_ms: i64,
    pub data: T,
}

pub struct Side<T> {
    pub ttl_ms: i64,
    index_slack: usize,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    in_order: VecDeque<(u32, u32)>,
    late: BinaryHeap<Reverse<(i64, u64, u32, u32)>>,
    newest_in_order_ms: i64,
    next_sequence: u64,
    live: usize,
}

impl<T: Default> Side<T> {
    pub fn new(ttl_ms: i64, index_slack: usize) -> Self {
        Side {
            ttl_ms,
            index_slack,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            in_order: VecDeque::new(),
            late: BinaryHeap::new(),
            newest_in_order_ms: i64::MIN,
            next_sequence: 0,
            live: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    fn find(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        let slots = &self.slots;
        self.index
            .find(hash, |&slot| slots[slot as usize].id == id)
            .copied()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    pub fn add(&mut self, id: &str, timestamp_ms: i64, data: T) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                let held = &mut self.slots[slot as usize];
                held.id = CompactString::from(id);
                held.timestamp_ms = timestamp_ms;
                held.generation = held.generation.wrapping_add(1);
                held.live = true;
                held.data = data;
                slot
            }
            None => {
                self.slots.push(Slot {
                    id: CompactString::from(id),
                    timestamp_ms,
                    generation: 0,
                    live: true,
                    data,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let hash = self.hasher.hash_one(id);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| {
            hasher.hash_one(slots[s as usize].id.as_str())
        });
        self.live += 1;
        let generation = self.slots[slot as usize].generation;
        if timestamp_ms >= self.newest_in_order_ms {
            self.in_order.push_back((slot, generation));
            self.newest_in_order_ms = timestamp_ms;
        } else {
            self.late
                .push(Reverse((timestamp_ms, sequence, slot, generation)));
        }
    }

    /// Remove and return the record under `id`, if any.
    pub fn take(&mut self, id: &str) -> Option<Taken<T>> {
        let slot = self.find(id)?;
        let taken = self.release(slot);
        if self.in_order.len() + self.late.len() > 2 * self.live + self.index_slack {
            self.compact();
        }
        Some(taken)
    }

    /// Drop `slot` from the index and the slab; its deque or heap entry stays.
    fn release(&mut self, slot: u32) -> Taken<T> {
        let hash = self.hasher.hash_one(self.slots[slot as usize].id.as_str());
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        let held = &mut self.slots[slot as usize];
        held.live = false;
        self.free.push(slot);
        self.live -= 1;
        Taken {
            id: std::mem::take(&mut held.id),
            timestamp_ms: held.timestamp_ms,
            data: std::mem::take(&mut held.data),
        }
    }

    fn is_live(&self, slot: u32, generation: u32) -> bool {
        let held = &self.slots[slot as usize];
        held.live && held.generation == generation
    }

    /// The live record with the oldest deadline, dropping stale fronts.
    fn front(&mut self) -> Option<u32> {
        while let Some(&(slot, generation)) = self.in_order.front() {
            if self.is_live(slot, generation) {
                break;
            }
            self.in_order.pop_front();
        }
        while let Some(&Reverse((_, _, slot, generation))) = self.late.peek() {
            if self.is_live(slot, generation) {
                break;
            }
            self.late.pop();
        }
        match (self.in_order.front(), self.late.peek()) {
            (None, None) => None,
            (Some(&(slot, _)), None) => Some(slot),
            (None, Some(&Reverse((_, _, slot, _)))) => Some(slot),
            (Some(&(in_order, _)), Some(&Reverse((late_ms, _, late, _)))) => {
                if late_ms < self.slots[in_order as usize].timestamp_ms {
                    Some(late)
                } else {
                    Some(in_order)
                }
            }
        }
    }

    fn remove_front(&mut self, slot: u32) -> Taken<T> {
        if matches!(self.in_order.front(), Some(&(front, _)) if front == slot) {
            self.in_order.pop_front();
        } else {
            self.late.pop();
        }
        self.release(slot)
    }

    /// Remove and return the record with the oldest deadline.
    pub fn pop_oldest(&mut self) -> Option<Taken<T>> {
        let slot = self.front()?;
        Some(self.remove_front(slot))
    }

    /// Remove and return, oldest first, each record with deadline <= `now_ms`.
    pub fn pop_due(&mut self, now_ms: i64, into: &mut impl FnMut(Taken<T>)) {
        let newest_due_ms = now_ms.saturating_sub(self.ttl_ms);
        while let Some(slot) = self.front() {
            if self.slots[slot as usize].timestamp_ms > newest_due_ms {
                break;
            }
            into(self.remove_front(slot));
        }
    }

    /// The oldest live deadline, or `i64::MAX` with nothing pending.
    pub fn earliest_deadline_ms(&mut self) -> i64 {
        match self.front() {
            Some(slot) => self.slots[slot as usize]
                .timestamp_ms
                .saturating_add(self.ttl_ms),
            None => i64::MAX,
        }
    }

    /// The live slots, oldest deadline first (first inserted among equals).
    ///
    /// The deque is in that order already and the heap sorts by it; on equal
    /// timestamps a deque record was always inserted before a heap one (the
    /// deque only takes records at least as new as its newest), so merging
    /// the two, the deque first on ties, gives the insertion order.
    pub fn in_deadline_order(&self) -> Vec<&Slot<T>> {
        let mut late: Vec<(i64, u64, u32)> = self
            .late
            .iter()
            .filter(|Reverse((_, _, slot, generation))| self.is_live(*slot, *generation))
            .map(|Reverse((timestamp_ms, sequence, slot, _))| (*timestamp_ms, *sequence, *slot))
            .collect();
        late.sort_unstable();
        let mut in_order = self
            .in_order
            .iter()
            .filter(|(slot, generation)| self.is_live(*slot, *generation))
            .map(|(slot, _)| *slot)
            .peekable();
        let mut late = late.into_iter().peekable();
        let mut merged = Vec::with_capacity(self.live);
        loop {
            let next = match (in_order.peek(), late.peek()) {
                (None, None) => break,
                (Some(_), None) => in_order.next(),
                (None, Some(_)) => late.next().map(|(_, _, slot)| slot),
                (Some(&slot), Some(&(late_ms, _, _))) => {
                    if late_ms < self.slots[slot as usize].timestamp_ms {
                        late.next().map(|(_, _, slot)| slot)
                    } else {
                        in_order.next()
                    }
                }
            };
            if let Some(slot) = next {
                merged.push(&self.slots[slot as usize]);
            }
        }
        merged
    }

    pub fn live_slots(&self) -> impl Iterator<Item = &Slot<T>> {
        self.slots.iter().filter(|s| s.live)
    }

    fn compact(&mut self) {
        let slots = &self.slots;
        let alive = |slot: u32, generation: u32| {
            let held = &slots[slot as usize];
            held.live && held.generation == generation
        };
        self.in_order.retain(|&(slot, generation)| alive(slot, generation));
        let late = std::mem::take(&mut self.late).into_vec();
        self.late = late
            .into_iter()
            .filter(|Reverse((_, _, slot, generation))| alive(*slot, *generation))
            .collect();
    }

    /// Bytes this side holds on the heap (capacity, not only the live part).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot<T>>()
            + self.free.capacity() * 4
            + self.index.capacity() * 5
            + self.in_order.capacity() * 8
            + self.late.capacity() * 24
            + self
                .slots
                .iter()
                .filter(|s| s.id.is_heap_allocated())
                .map(|s| s.id.capacity())
                .sum::<usize>()
    }
}
