//! Numbers for the values pending predictions share: model keys, class
//! tuples, segments.
//!
//! A pending prediction stores a 4-byte number of each instead of a
//! reference. Each number counts the records that hold it; when the count
//! falls to zero the value is forgotten and the number reused, so hostile
//! producers that send a new class name with every message cost memory only
//! while their predictions are pending.

use hashbrown::HashMap;
use std::hash::Hash;

use pyo3::prelude::*;

struct Entry<K> {
    key: K,
    object: Py<PyAny>,
    holders: u32,
}

pub struct Numbers<K> {
    entries: Vec<Option<Entry<K>>>,
    free: Vec<u32>,
    numbers: HashMap<K, u32>,
}

impl<K: Hash + Eq + Clone> Numbers<K> {
    pub fn new() -> Self {
        Numbers { entries: Vec::new(), free: Vec::new(), numbers: HashMap::new() }
    }

    /// The number of `key`, now held once more; `object` makes its Python
    /// value when the key is new.
    pub fn hold(
        &mut self,
        key: K,
        object: impl FnOnce() -> PyResult<Py<PyAny>>,
    ) -> PyResult<u32> {
        if let Some(&number) = self.numbers.get(&key) {
            let entry = self.entries[number as usize].as_mut().expect("numbered entry");
            entry.holders += 1;
            return Ok(number);
        }
        let entry = Entry { key: key.clone(), object: object()?, holders: 1 };
        let number = match self.free.pop() {
            Some(number) => {
                self.entries[number as usize] = Some(entry);
                number
            }
            None => {
                self.entries.push(Some(entry));
                (self.entries.len() - 1) as u32
            }
        };
        self.numbers.insert(key, number);
        Ok(number)
    }

    /// One holder of `number` is gone.
    pub fn release(&mut self, number: u32) {
        let slot = &mut self.entries[number as usize];
        let entry = slot.as_mut().expect("released number is held");
        entry.holders -= 1;
        if entry.holders == 0 {
            let entry = slot.take().expect("held");
            self.numbers.remove(&entry.key);
            self.free.push(number);
        }
    }

    pub fn object(&self, py: Python<'_>, number: u32) -> Py<PyAny> {
        self.entries[number as usize].as_ref().expect("held").object.clone_ref(py)
    }

    pub fn key(&self, number: u32) -> &K {
        &self.entries[number as usize].as_ref().expect("held").key
    }

    pub fn len(&self) -> usize {
        self.numbers.len()
    }
}
