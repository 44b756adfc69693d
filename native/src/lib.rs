//! driftstream's compiled core: the pending state of one partition's join.
//!
//! `JoinCore` holds what `streamer.join.EventJoin` keeps between calls (the
//! pending predictions and outcomes, the duplicate guard, the expired
//! backlog) in compact native structures, and applies the join's rules to
//! them. The semantics are those of `streamer/join.py`'s module docstring;
//! that module wraps this class, turns its plain results into `JoinStep` and
//! `DroppedEntry` values, and maps model keys, class tuples and segments to
//! the small integers stored here.
//!
//! A pending binary prediction costs one 64-byte slot (an event id of up to
//! 24 bytes is stored inline), about 10 bytes of index and 8 of deadline
//! queue; a multiclass one adds 8 bytes per class in a shared arena.

mod guard;
mod side;

use std::collections::HashMap;

use compact_str::CompactString;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyString, PyTuple};

use guard::Guard;
use side::{Side, Taken};

/// No classes (a binary prediction), or no model (an outcome).
const NONE: u32 = u32::MAX;
/// No probabilities tuple.
const NO_PROBABILITIES: u16 = u16::MAX;

/// A pending prediction's fields besides its id and timestamp, in 24 bytes.
///
/// With no probabilities tuple (binary), `value` holds the probability's
/// bits. With one, `value` is where its run starts in the arena; the run
/// holds the probability first, when there is one too, then the tuple.
#[derive(Default, Clone, Copy)]
struct PredictionData {
    value: u64,
    model: u32,
    classes: u32,
    segment: u32,
    probabilities_len: u16,
    has_probability: bool,
}

impl PredictionData {
    fn run_len(&self) -> usize {
        if self.probabilities_len == NO_PROBABILITIES {
            0
        } else {
            self.probabilities_len as usize + usize::from(self.has_probability)
        }
    }
}

/// Multiclass probabilities, packed; freed runs are reused by length.
#[derive(Default)]
struct Arena {
    values: Vec<f64>,
    free: HashMap<usize, Vec<u64>>,
}

impl Arena {
    /// Store `values` as one run; where it starts.
    fn alloc(&mut self, values: &[f64]) -> u64 {
        if let Some(at) = self.free.get_mut(&values.len()).and_then(Vec::pop) {
            let start = at as usize;
            self.values[start..start + values.len()].copy_from_slice(values);
            return at;
        }
        let at = self.values.len() as u64;
        self.values.extend_from_slice(values);
        at
    }

    fn run(&self, data: &PredictionData) -> &[f64] {
        let start = data.value as usize;
        &self.values[start..start + data.run_len()]
    }

    fn release(&mut self, data: &PredictionData) {
        let len = data.run_len();
        if len > 0 {
            self.free.entry(len).or_default().push(data.value);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.values.capacity() * 8
            + self.free.values().map(|v| v.capacity() * 8).sum::<usize>()
    }
}

struct Dropped {
    outcome: bool,
    id: CompactString,
    model: u32,
}

/// The join state of one partition; see `streamer/join.py`.
#[pyclass(module = "streamer._native")]
pub struct JoinCore {
    max_pending: usize,
    guard_ttl_ms: i64,
    predictions: Side<PredictionData>,
    outcomes: Side<Option<Py<PyAny>>>,
    guard: Guard,
    expired: Vec<Dropped>,
    clock_ms: i64,
    next_deadline_ms: i64,
    arena: Arena,
    prediction_name: Py<PyString>,
    outcome_name: Py<PyString>,
}

fn optional_model(py: Python<'_>, model: u32) -> Py<PyAny> {
    if model == NONE {
        py.None()
    } else {
        model.into_pyobject(py).expect("u32 converts").into_any().unbind()
    }
}

impl JoinCore {
    fn advance(&mut self, now_ms: i64) {
        if now_ms > self.clock_ms {
            self.clock_ms = now_ms;
        }
        if self.clock_ms >= self.next_deadline_ms {
            self.collect();
        }
    }

    fn collect(&mut self) {
        let clock_ms = self.clock_ms;
        let (arena, expired) = (&mut self.arena, &mut self.expired);
        self.predictions.pop_due(clock_ms, &mut |taken: Taken<PredictionData>| {
            arena.release(&taken.data);
            expired.push(Dropped { outcome: false, id: taken.id, model: taken.data.model });
        });
        self.outcomes.pop_due(clock_ms, &mut |taken: Taken<Option<Py<PyAny>>>| {
            expired.push(Dropped { outcome: true, id: taken.id, model: NONE });
        });
        let newest_forgotten_ms = clock_ms.saturating_sub(self.guard_ttl_ms);
        while matches!(self.guard.oldest_ms(), Some(at) if at <= newest_forgotten_ms) {
            self.guard.pop_oldest();
        }
        self.next_deadline_ms = self.earliest_deadline_ms();
    }

    fn earliest_deadline_ms(&mut self) -> i64 {
        let mut earliest = self
            .predictions
            .earliest_deadline_ms()
            .min(self.outcomes.earliest_deadline_ms());
        if let Some(at) = self.guard.oldest_ms() {
            earliest = earliest.min(at.saturating_add(self.guard_ttl_ms));
        }
        earliest
    }

    /// Remember a joined id; the number of ids the size bound made it forget.
    fn remember_joined(&mut self, id: CompactString) -> usize {
        self.guard.push(id, self.clock_ms);
        let forgotten_deadline_ms = self.clock_ms.saturating_add(self.guard_ttl_ms);
        if forgotten_deadline_ms < self.next_deadline_ms {
            self.next_deadline_ms = forgotten_deadline_ms;
        }
        let mut forgotten = 0;
        while self.guard.len() > self.max_pending {
            self.guard.pop_oldest();
            forgotten += 1;
        }
        forgotten
    }

    fn dropped_tuple(&self, py: Python<'_>, entry: &Dropped) -> PyResult<Py<PyAny>> {
        let side = if entry.outcome { &self.outcome_name } else { &self.prediction_name };
        let tuple = PyTuple::new(
            py,
            [
                side.clone_ref(py).into_any(),
                PyString::new(py, &entry.id).into_any().unbind(),
                optional_model(py, entry.model),
            ],
        )?;
        Ok(tuple.into_any().unbind())
    }

    fn evictions(&self, py: Python<'_>, dropped: Vec<Dropped>) -> PyResult<Py<PyAny>> {
        let rows = dropped
            .iter()
            .map(|entry| self.dropped_tuple(py, entry))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, rows)?.into_any().unbind())
    }

    fn prediction_data(
        &mut self,
        model: u32,
        probability: Option<f64>,
        probabilities: Option<Vec<f64>>,
        classes: u32,
        segment: u32,
    ) -> PyResult<PredictionData> {
        let (value, probabilities_len) = match probabilities {
            None => (probability.unwrap_or(0.0).to_bits(), NO_PROBABILITIES),
            Some(values) => {
                let len = u16::try_from(values.len())
                    .ok()
                    .filter(|&len| len != NO_PROBABILITIES)
                    .ok_or_else(|| PyValueError::new_err("a prediction has too many classes"))?;
                let at = match probability {
                    Some(probability) => {
                        let run: Vec<f64> = std::iter::once(probability).chain(values).collect();
                        self.arena.alloc(&run)
                    }
                    None => self.arena.alloc(&values),
                };
                (at, len)
            }
        };
        Ok(PredictionData {
            value,
            model,
            classes,
            segment,
            probabilities_len,
            has_probability: probability.is_some(),
        })
    }

    /// `(model, timestamp_ms, probability, probabilities, classes, segment)`.
    fn prediction_fields(
        &self,
        py: Python<'_>,
        timestamp_ms: i64,
        data: &PredictionData,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let (probability, probabilities) = if data.probabilities_len == NO_PROBABILITIES {
            (data.has_probability.then(|| f64::from_bits(data.value)), None)
        } else {
            let run = self.arena.run(data);
            let (probability, rest) = if data.has_probability {
                (Some(run[0]), &run[1..])
            } else {
                (None, run)
            };
            (probability, Some(PyTuple::new(py, rest)?))
        };
        let probability = match probability {
            Some(probability) => probability.into_pyobject(py)?.into_any().unbind(),
            None => py.None(),
        };
        let probabilities = match probabilities {
            Some(tuple) => tuple.into_any().unbind(),
            None => py.None(),
        };
        Ok(vec![
            data.model.into_pyobject(py)?.into_any().unbind(),
            timestamp_ms.into_pyobject(py)?.into_any().unbind(),
            probability,
            probabilities,
            optional_model(py, data.classes),
            data.segment.into_pyobject(py)?.into_any().unbind(),
        ])
    }
}

#[pymethods]
impl JoinCore {
    #[new]
    #[pyo3(signature = (prediction_ttl_ms, outcome_ttl_ms, max_pending, duplicate_guard_ttl_ms, index_slack = side::INDEX_SLACK))]
    fn new(
        py: Python<'_>,
        prediction_ttl_ms: i64,
        outcome_ttl_ms: i64,
        max_pending: usize,
        duplicate_guard_ttl_ms: i64,
        index_slack: usize,
    ) -> Self {
        JoinCore {
            max_pending,
            guard_ttl_ms: duplicate_guard_ttl_ms,
            predictions: Side::new(prediction_ttl_ms, index_slack),
            outcomes: Side::new(outcome_ttl_ms, index_slack),
            guard: Guard::new(),
            expired: Vec::new(),
            clock_ms: i64::MIN,
            next_deadline_ms: i64::MAX,
            arena: Arena::default(),
            prediction_name: PyString::intern(py, "prediction").unbind(),
            outcome_name: PyString::intern(py, "outcome").unbind(),
        }
    }

    #[getter]
    fn pending_predictions(&self) -> usize {
        self.predictions.len()
    }

    #[getter]
    fn pending_outcomes(&self) -> usize {
        self.outcomes.len()
    }

    #[getter]
    fn guard_size(&self) -> usize {
        self.guard.len()
    }

    /// None: held (or straight to the backlog); True: a duplicate; a tuple
    /// `(label, outcome_timestamp_ms, guard_evictions)`: joined with the
    /// pending outcome; a list of `(side, event_id, model)`: held, and these
    /// were evicted.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (event_id, model, timestamp_ms, probability, probabilities, classes, segment, now_ms))]
    fn add_prediction(
        &mut self,
        py: Python<'_>,
        event_id: &str,
        model: u32,
        timestamp_ms: i64,
        probability: Option<f64>,
        probabilities: Option<Vec<f64>>,
        classes: u32,
        segment: u32,
        now_ms: i64,
    ) -> PyResult<Py<PyAny>> {
        self.advance(now_ms);
        if self.guard.contains(event_id) || self.predictions.contains(event_id) {
            return Ok(true.into_pyobject(py)?.to_owned().into_any().unbind());
        }
        if let Some(outcome) = self.outcomes.take(event_id) {
            let forgotten = self.remember_joined(outcome.id);
            let label = outcome.data.unwrap_or_else(|| py.None());
            let tuple = PyTuple::new(
                py,
                [
                    label,
                    outcome.timestamp_ms.into_pyobject(py)?.into_any().unbind(),
                    forgotten.into_pyobject(py)?.into_any().unbind(),
                ],
            )?;
            return Ok(tuple.into_any().unbind());
        }
        let deadline_ms = timestamp_ms.saturating_add(self.predictions.ttl_ms);
        if deadline_ms <= self.clock_ms {
            self.expired.push(Dropped { outcome: false, id: event_id.into(), model });
            return Ok(py.None());
        }
        let data = self.prediction_data(model, probability, probabilities, classes, segment)?;
        self.predictions.add(event_id, timestamp_ms, data);
        if deadline_ms < self.next_deadline_ms {
            self.next_deadline_ms = deadline_ms;
        }
        if self.predictions.len() <= self.max_pending {
            return Ok(py.None());
        }
        let mut evicted = Vec::new();
        while self.predictions.len() > self.max_pending {
            let Some(oldest) = self.predictions.pop_oldest() else { break };
            self.arena.release(&oldest.data);
            evicted.push(Dropped { outcome: false, id: oldest.id, model: oldest.data.model });
        }
        self.evictions(py, evicted)
    }

    /// None: held (or straight to the backlog); True: a duplicate; a tuple
    /// `(model, timestamp_ms, probability, probabilities, classes, segment,
    /// guard_evictions)`: joined with the pending prediction; a list of
    /// `(side, event_id, model)`: held, and these were evicted.
    fn add_outcome(
        &mut self,
        py: Python<'_>,
        event_id: &str,
        label: Py<PyAny>,
        timestamp_ms: i64,
        now_ms: i64,
    ) -> PyResult<Py<PyAny>> {
        self.advance(now_ms);
        if self.guard.contains(event_id) || self.outcomes.contains(event_id) {
            return Ok(true.into_pyobject(py)?.to_owned().into_any().unbind());
        }
        if let Some(prediction) = self.predictions.take(event_id) {
            let mut fields = self.prediction_fields(py, prediction.timestamp_ms, &prediction.data)?;
            self.arena.release(&prediction.data);
            let forgotten = self.remember_joined(prediction.id);
            fields.push(forgotten.into_pyobject(py)?.into_any().unbind());
            return Ok(PyTuple::new(py, fields)?.into_any().unbind());
        }
        let deadline_ms = timestamp_ms.saturating_add(self.outcomes.ttl_ms);
        if deadline_ms <= self.clock_ms {
            self.expired.push(Dropped { outcome: true, id: event_id.into(), model: NONE });
            return Ok(py.None());
        }
        self.outcomes.add(event_id, timestamp_ms, Some(label));
        if deadline_ms < self.next_deadline_ms {
            self.next_deadline_ms = deadline_ms;
        }
        if self.outcomes.len() <= self.max_pending {
            return Ok(py.None());
        }
        let mut evicted = Vec::new();
        while self.outcomes.len() > self.max_pending {
            let Some(oldest) = self.outcomes.pop_oldest() else { break };
            evicted.push(Dropped { outcome: true, id: oldest.id, model: NONE });
        }
        self.evictions(py, evicted)
    }

    /// Advance the clock and return the expired backlog as
    /// `(side, event_id, model)` tuples (model None for outcomes).
    fn expire(&mut self, py: Python<'_>, now_ms: i64) -> PyResult<Py<PyAny>> {
        self.advance(now_ms);
        let expired = std::mem::take(&mut self.expired);
        self.evictions(py, expired)
    }

    /// Pending predictions per model number.
    fn pending_by_model<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for slot in self.predictions.live_slots() {
            *counts.entry(slot.data.model).or_default() += 1;
        }
        let found = PyDict::new(py);
        for (model, count) in counts {
            found.set_item(model, count)?;
        }
        Ok(found)
    }

    fn clock_ms(&self) -> Option<i64> {
        (self.clock_ms != i64::MIN).then_some(self.clock_ms)
    }

    /// Pending predictions in deadline order: `(event_id, model, timestamp_ms,
    /// probability, probabilities, classes, segment)`.
    fn prediction_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = PyList::empty(py);
        for slot in self.predictions.in_deadline_order() {
            let fields = self.prediction_fields(py, slot.timestamp_ms, &slot.data)?;
            let [model, timestamp_ms, probability, probabilities, classes, segment]: [Py<PyAny>; 6] =
                fields.try_into().expect("six prediction fields");
            let row = PyTuple::new(
                py,
                [
                    PyString::new(py, &slot.id).into_any().unbind(),
                    model,
                    timestamp_ms,
                    probability,
                    probabilities,
                    classes,
                    segment,
                ],
            )?;
            rows.append(row)?;
        }
        Ok(rows)
    }

    /// Pending outcomes in deadline order: `(event_id, label, timestamp_ms)`.
    fn outcome_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = PyList::empty(py);
        for slot in self.outcomes.in_deadline_order() {
            let label = slot.data.as_ref().map_or_else(|| py.None(), |l| l.clone_ref(py));
            let row = PyTuple::new(
                py,
                [
                    PyString::new(py, &slot.id).into_any().unbind(),
                    label,
                    slot.timestamp_ms.into_pyobject(py)?.into_any().unbind(),
                ],
            )?;
            rows.append(row)?;
        }
        Ok(rows)
    }

    /// The duplicate guard, oldest first: `(event_id, joined_at_ms)`.
    fn guard_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = PyList::empty(py);
        for (id, joined_at_ms) in self.guard.iter() {
            rows.append((id.as_str(), *joined_at_ms))?;
        }
        Ok(rows)
    }

    /// The expired backlog not yet returned: `(side, event_id, model)`.
    fn expired_rows(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let rows = self
            .expired
            .iter()
            .map(|entry| self.dropped_tuple(py, entry))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, rows)?.into_any().unbind())
    }

    /// True when `event_id` is pending on either side.
    fn is_pending(&self, event_id: &str) -> bool {
        self.predictions.contains(event_id) || self.outcomes.contains(event_id)
    }

    fn guard_contains(&self, event_id: &str) -> bool {
        self.guard.contains(event_id)
    }

    fn guard_newest_ms(&self) -> Option<i64> {
        self.guard.newest_ms()
    }

    // -- restoring (the wrapper checks the rows first) --------------------

    fn set_clock(&mut self, clock_ms: Option<i64>) {
        self.clock_ms = clock_ms.unwrap_or(i64::MIN);
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (event_id, model, timestamp_ms, probability, probabilities, classes, segment))]
    fn restore_prediction(
        &mut self,
        event_id: &str,
        model: u32,
        timestamp_ms: i64,
        probability: Option<f64>,
        probabilities: Option<Vec<f64>>,
        classes: u32,
        segment: u32,
    ) -> PyResult<()> {
        let data = self.prediction_data(model, probability, probabilities, classes, segment)?;
        self.predictions.add(event_id, timestamp_ms, data);
        Ok(())
    }

    fn restore_outcome(&mut self, event_id: &str, label: Py<PyAny>, timestamp_ms: i64) {
        self.outcomes.add(event_id, timestamp_ms, Some(label));
    }

    fn restore_guard(&mut self, event_id: &str, joined_at_ms: i64) {
        self.guard.push(event_id.into(), joined_at_ms);
    }

    #[pyo3(signature = (outcome, event_id, model))]
    fn restore_expired(&mut self, outcome: bool, event_id: &str, model: Option<u32>) {
        self.expired.push(Dropped { outcome, id: event_id.into(), model: model.unwrap_or(NONE) });
    }

    fn finish_restore(&mut self) {
        self.next_deadline_ms = self.earliest_deadline_ms();
    }

    // -- the wrapper's tables of model keys, classes and segments ----------

    /// The model, classes and segment numbers in use: three sets.
    fn numbers_in_use<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let (models, classes, segments) = (PySet::empty(py)?, PySet::empty(py)?, PySet::empty(py)?);
        for slot in self.predictions.live_slots() {
            models.add(slot.data.model)?;
            if slot.data.classes != NONE {
                classes.add(slot.data.classes)?;
            }
            segments.add(slot.data.segment)?;
        }
        for entry in self.expired.iter().filter(|e| e.model != NONE) {
            models.add(entry.model)?;
        }
        PyTuple::new(py, [models, classes, segments])
    }

    /// Renumber after the wrapper compacted its tables: `old -> new` maps.
    fn renumber(
        &mut self,
        models: HashMap<u32, u32>,
        classes: HashMap<u32, u32>,
        segments: HashMap<u32, u32>,
    ) -> PyResult<()> {
        let missing = || PyValueError::new_err("renumber: a number in use has no new number");
        for slot in self.predictions.live_slots_mut() {
            let data = &mut slot.data;
            data.model = *models.get(&data.model).ok_or_else(missing)?;
            if data.classes != NONE {
                data.classes = *classes.get(&data.classes).ok_or_else(missing)?;
            }
            data.segment = *segments.get(&data.segment).ok_or_else(missing)?;
        }
        for entry in self.expired.iter_mut().filter(|e| e.model != NONE) {
            entry.model = *models.get(&entry.model).ok_or_else(missing)?;
        }
        Ok(())
    }

    /// Bytes of native memory held (allocated capacity, an upper bound of use).
    fn heap_bytes(&self) -> usize {
        self.predictions.heap_bytes()
            + self.outcomes.heap_bytes()
            + self.guard.heap_bytes()
            + self.arena.heap_bytes()
            + self.expired.capacity() * std::mem::size_of::<Dropped>()
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JoinCore>()?;
    m.add("INDEX_SLACK", side::INDEX_SLACK)?;
    m.add("NONE", NONE)?;
    m.add(
        "PREDICTION_SLOT_BYTES",
        std::mem::size_of::<side::Slot<PredictionData>>(),
    )?;
    Ok(())
}
