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

mod batch;
mod cusum;
mod decode;
mod scan;
mod guard;
mod registry;
mod side;
mod windows;

use std::collections::HashMap;

use compact_str::CompactString;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use guard::Guard;
use registry::Numbers;
use side::{Side, Taken};

type ModelName = (CompactString, CompactString);
type Names = Box<[CompactString]>;

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
    models: Numbers<ModelName>,
    classes: Numbers<Names>,
    segments: Numbers<Names>,
}

/// What adding a record did, before it becomes Python values.
enum Added<P> {
    Held,
    Duplicate,
    Joined { partner: Taken<P>, forgotten: usize },
    Evicted(Vec<Dropped>),
}

/// A prediction to add; its numbers are already held once for it.
struct NewPrediction<'a> {
    id: &'a str,
    timestamp_ms: i64,
    model: u32,
    classes: u32,
    segment: u32,
    probability: Option<f64>,
    probabilities: Option<&'a [f64]>,
}

/// The (name, version) of a Python `ModelKey`.
fn model_name(model: &Bound<'_, PyAny>) -> PyResult<ModelName> {
    let tuple = model.cast::<PyTuple>()?;
    Ok((
        tuple.get_item(0)?.cast::<PyString>()?.to_str()?.into(),
        tuple.get_item(1)?.cast::<PyString>()?.to_str()?.into(),
    ))
}

fn names(tuple: &Bound<'_, PyAny>) -> PyResult<Names> {
    let tuple = tuple.cast::<PyTuple>()?;
    tuple
        .iter()
        .map(|item| Ok(CompactString::from(item.cast::<PyString>()?.to_str()?)))
        .collect()
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
        let mut due = Vec::new();
        self.predictions.pop_due(clock_ms, &mut |taken: Taken<PredictionData>| due.push(taken));
        for taken in due {
            // The backlog entry keeps the model's number; the rest is let go.
            self.release_details(&taken.data);
            self.expired.push(Dropped { outcome: false, id: taken.id, model: taken.data.model });
        }
        let expired = &mut self.expired;
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

    /// Let go of a prediction's classes, segment and probabilities.
    fn release_details(&mut self, data: &PredictionData) {
        if data.classes != NONE {
            self.classes.release(data.classes);
        }
        self.segments.release(data.segment);
        self.arena.release(data);
    }

    /// Let go of everything a prediction held.
    fn release_prediction(&mut self, data: &PredictionData) {
        self.models.release(data.model);
        self.release_details(data);
    }

    fn release_new(&mut self, prediction: &NewPrediction<'_>) {
        self.models.release(prediction.model);
        if prediction.classes != NONE {
            self.classes.release(prediction.classes);
        }
        self.segments.release(prediction.segment);
    }

    fn add_prediction_record(
        &mut self,
        prediction: NewPrediction<'_>,
        now_ms: i64,
    ) -> PyResult<Added<Option<Py<PyAny>>>> {
        match self.meet_prediction(prediction.id, now_ms) {
            Some(met) => {
                self.release_new(&prediction);
                Ok(met)
            }
            None => self.store_prediction(prediction),
        }
    }

    /// The first half of adding a prediction, before it holds any number:
    /// `Duplicate`, or `Joined` with the pending outcome of its id, or
    /// `None` when it is to be stored (`store_prediction`, with the same
    /// clock and nothing else done in between).
    fn meet_prediction(&mut self, id: &str, now_ms: i64) -> Option<Added<Option<Py<PyAny>>>> {
        self.advance(now_ms);
        if self.guard.contains(id) || self.predictions.contains(id) {
            return Some(Added::Duplicate);
        }
        let outcome = self.outcomes.take(id)?;
        let forgotten = self.remember_joined(CompactString::from(id));
        Some(Added::Joined { partner: outcome, forgotten })
    }

    /// The second half: hold the prediction (it has met nothing), or drop it
    /// as expired; evict the oldest past the bound.
    fn store_prediction(&mut self, prediction: NewPrediction<'_>) -> PyResult<Added<Option<Py<PyAny>>>> {
        let id = prediction.id;
        let deadline_ms = prediction.timestamp_ms.saturating_add(self.predictions.ttl_ms);
        if deadline_ms <= self.clock_ms {
            if prediction.classes != NONE {
                self.classes.release(prediction.classes);
            }
            self.segments.release(prediction.segment);
            self.expired.push(Dropped { outcome: false, id: id.into(), model: prediction.model });
            return Ok(Added::Held);
        }
        let data = self.prediction_data(&prediction)?;
        self.predictions.add(id, prediction.timestamp_ms, data);
        if deadline_ms < self.next_deadline_ms {
            self.next_deadline_ms = deadline_ms;
        }
        if self.predictions.len() <= self.max_pending {
            return Ok(Added::Held);
        }
        let mut evicted = Vec::new();
        while self.predictions.len() > self.max_pending {
            let Some(oldest) = self.predictions.pop_oldest() else { break };
            self.release_details(&oldest.data);
            evicted.push(Dropped { outcome: false, id: oldest.id, model: oldest.data.model });
        }
        Ok(Added::Evicted(evicted))
    }

    /// Add an outcome; a joined partner's numbers stay held for the caller,
    /// who lets them go with `release_prediction`.
    fn add_outcome_record(
        &mut self,
        id: &str,
        label: impl FnOnce() -> Py<PyAny>,
        timestamp_ms: i64,
        now_ms: i64,
    ) -> Added<PredictionData> {
        self.advance(now_ms);
        if self.guard.contains(id) || self.outcomes.contains(id) {
            return Added::Duplicate;
        }
        if let Some(prediction) = self.predictions.take(id) {
            let forgotten = self.remember_joined(CompactString::from(id));
            return Added::Joined { partner: prediction, forgotten };
        }
        let deadline_ms = timestamp_ms.saturating_add(self.outcomes.ttl_ms);
        if deadline_ms <= self.clock_ms {
            self.expired.push(Dropped { outcome: true, id: id.into(), model: NONE });
            return Added::Held;
        }
        self.outcomes.add(id, timestamp_ms, Some(label()));
        if deadline_ms < self.next_deadline_ms {
            self.next_deadline_ms = deadline_ms;
        }
        if self.outcomes.len() <= self.max_pending {
            return Added::Held;
        }
        let mut evicted = Vec::new();
        while self.outcomes.len() > self.max_pending {
            let Some(oldest) = self.outcomes.pop_oldest() else { break };
            evicted.push(Dropped { outcome: true, id: oldest.id, model: NONE });
        }
        Added::Evicted(evicted)
    }

    /// `(side, event_id, model key or None)`; `release` lets go of the model.
    fn dropped_tuple(&mut self, py: Python<'_>, entry: &Dropped, release: bool) -> PyResult<Py<PyAny>> {
        let side = if entry.outcome { &self.outcome_name } else { &self.prediction_name };
        let model = if entry.model == NONE {
            py.None()
        } else {
            let object = self.models.object(py, entry.model);
            if release {
                self.models.release(entry.model);
            }
            object
        };
        let tuple = PyTuple::new(
            py,
            [side.clone_ref(py).into_any(), PyString::new(py, &entry.id).into_any().unbind(), model],
        )?;
        Ok(tuple.into_any().unbind())
    }

    fn dropped_list(&mut self, py: Python<'_>, dropped: &[Dropped], release: bool) -> PyResult<Py<PyAny>> {
        let mut rows = Vec::with_capacity(dropped.len());
        for entry in dropped {
            rows.push(self.dropped_tuple(py, entry, release)?);
        }
        Ok(PyList::new(py, rows)?.into_any().unbind())
    }

    fn prediction_data(&mut self, prediction: &NewPrediction<'_>) -> PyResult<PredictionData> {
        let probability = prediction.probability;
        let (value, probabilities_len) = match prediction.probabilities {
            None => (probability.unwrap_or(0.0).to_bits(), NO_PROBABILITIES),
            Some(values) => {
                let len = u16::try_from(values.len())
                    .ok()
                    .filter(|&len| len != NO_PROBABILITIES)
                    .ok_or_else(|| PyValueError::new_err("a prediction has too many classes"))?;
                let at = match probability {
                    Some(probability) => {
                        let run: Vec<f64> = std::iter::once(probability).chain(values.iter().copied()).collect();
                        self.arena.alloc(&run)
                    }
                    None => self.arena.alloc(values),
                };
                (at, len)
            }
        };
        Ok(PredictionData {
            value,
            model: prediction.model,
            classes: prediction.classes,
            segment: prediction.segment,
            probabilities_len,
            has_probability: probability.is_some(),
        })
    }

    fn probability_and_probabilities(&self, data: &PredictionData) -> (Option<f64>, Option<&[f64]>) {
        if data.probabilities_len == NO_PROBABILITIES {
            return (data.has_probability.then(|| f64::from_bits(data.value)), None);
        }
        let run = self.arena.run(data);
        if data.has_probability {
            (Some(run[0]), Some(&run[1..]))
        } else {
            (None, Some(run))
        }
    }

    /// `(model, timestamp_ms, probability, probabilities, classes, segment)`
    /// as Python values.
    fn prediction_fields(
        &self,
        py: Python<'_>,
        timestamp_ms: i64,
        data: &PredictionData,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let (probability, probabilities) = self.probability_and_probabilities(data);
        let probability = match probability {
            Some(probability) => probability.into_pyobject(py)?.into_any().unbind(),
            None => py.None(),
        };
        let probabilities = match probabilities {
            Some(values) => PyTuple::new(py, values)?.into_any().unbind(),
            None => py.None(),
        };
        let classes = if data.classes == NONE { py.None() } else { self.classes.object(py, data.classes) };
        Ok(vec![
            self.models.object(py, data.model),
            timestamp_ms.into_pyobject(py)?.into_any().unbind(),
            probability,
            probabilities,
            classes,
            self.segments.object(py, data.segment),
        ])
    }

    /// A prediction from Python values, its numbers held.
    fn python_prediction<'a>(
        &mut self,
        id: &'a str,
        (model, classes, segment): (&Bound<'_, PyAny>, &Bound<'_, PyAny>, &Bound<'_, PyAny>),
        timestamp_ms: i64,
        probability: Option<f64>,
        probabilities: Option<&'a [f64]>,
    ) -> PyResult<NewPrediction<'a>> {
        let (model, classes, segment) = self.hold_python(model, classes, segment)?;
        Ok(NewPrediction { id, timestamp_ms, model, classes, segment, probability, probabilities })
    }

    /// Hold the numbers of a Python prediction's model, classes and segment.
    fn hold_python(
        &mut self,
        model: &Bound<'_, PyAny>,
        classes: &Bound<'_, PyAny>,
        segment: &Bound<'_, PyAny>,
    ) -> PyResult<(u32, u32, u32)> {
        let model_number = self.models.hold(model_name(model)?, || Ok(model.clone().unbind()))?;
        let classes_number = if classes.is_none() {
            NONE
        } else {
            match names(classes).and_then(|key| self.classes.hold(key, || Ok(classes.clone().unbind()))) {
                Ok(number) => number,
                Err(error) => {
                    self.models.release(model_number);
                    return Err(error);
                }
            }
        };
        let segment_number = match names(segment).and_then(|key| self.segments.hold(key, || Ok(segment.clone().unbind()))) {
            Ok(number) => number,
            Err(error) => {
                self.models.release(model_number);
                if classes_number != NONE {
                    self.classes.release(classes_number);
                }
                return Err(error);
            }
        };
        Ok((model_number, classes_number, segment_number))
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
            models: Numbers::new(),
            classes: Numbers::new(),
            segments: Numbers::new(),
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

    /// Values the number tables hold: (models, class tuples, segments).
    fn numbered(&self) -> (usize, usize, usize) {
        (self.models.len(), self.classes.len(), self.segments.len())
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
        model: &Bound<'_, PyAny>,
        timestamp_ms: i64,
        probability: Option<f64>,
        probabilities: Option<Vec<f64>>,
        classes: &Bound<'_, PyAny>,
        segment: &Bound<'_, PyAny>,
        now_ms: i64,
    ) -> PyResult<Py<PyAny>> {
        let prediction = self.python_prediction(
            event_id,
            (model, classes, segment),
            timestamp_ms,
            probability,
            probabilities.as_deref(),
        )?;
        match self.add_prediction_record(prediction, now_ms)? {
            Added::Held => Ok(py.None()),
            Added::Duplicate => Ok(true.into_pyobject(py)?.to_owned().into_any().unbind()),
            Added::Joined { partner, forgotten } => {
                let label = partner.data.unwrap_or_else(|| py.None());
                let tuple = PyTuple::new(
                    py,
                    [
                        label,
                        partner.timestamp_ms.into_pyobject(py)?.into_any().unbind(),
                        forgotten.into_pyobject(py)?.into_any().unbind(),
                    ],
                )?;
                Ok(tuple.into_any().unbind())
            }
            Added::Evicted(evicted) => self.dropped_list(py, &evicted, true),
        }
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
        match self.add_outcome_record(event_id, || label, timestamp_ms, now_ms) {
            Added::Held => Ok(py.None()),
            Added::Duplicate => Ok(true.into_pyobject(py)?.to_owned().into_any().unbind()),
            Added::Joined { partner, forgotten } => {
                let fields = self.prediction_fields(py, partner.timestamp_ms, &partner.data);
                self.release_prediction(&partner.data);
                let mut fields = fields?;
                fields.push(forgotten.into_pyobject(py)?.into_any().unbind());
                Ok(PyTuple::new(py, fields)?.into_any().unbind())
            }
            Added::Evicted(evicted) => self.dropped_list(py, &evicted, true),
        }
    }

    /// Advance the clock and return the expired backlog as
    /// `(side, event_id, model)` tuples (model None for outcomes).
    fn expire(&mut self, py: Python<'_>, now_ms: i64) -> PyResult<Py<PyAny>> {
        self.advance(now_ms);
        let expired = std::mem::take(&mut self.expired);
        self.dropped_list(py, &expired, true)
    }

    /// Pending predictions per model key.
    fn pending_by_model<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for slot in self.predictions.live_slots() {
            *counts.entry(slot.data.model).or_default() += 1;
        }
        let found = PyDict::new(py);
        for (model, count) in counts {
            found.set_item(self.models.object(py, model), count)?;
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
    fn expired_rows(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let expired = std::mem::take(&mut self.expired);
        let rows = self.dropped_list(py, &expired, false);
        self.expired = expired;
        rows
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
        model: &Bound<'_, PyAny>,
        timestamp_ms: i64,
        probability: Option<f64>,
        probabilities: Option<Vec<f64>>,
        classes: &Bound<'_, PyAny>,
        segment: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let prediction = self.python_prediction(
            event_id,
            (model, classes, segment),
            timestamp_ms,
            probability,
            probabilities.as_deref(),
        )?;
        match self.prediction_data(&prediction) {
            Ok(data) => {
                self.predictions.add(event_id, timestamp_ms, data);
                Ok(())
            }
            Err(error) => {
                self.release_new(&prediction);
                Err(error)
            }
        }
    }

    fn restore_outcome(&mut self, event_id: &str, label: Py<PyAny>, timestamp_ms: i64) {
        self.outcomes.add(event_id, timestamp_ms, Some(label));
    }

    fn restore_guard(&mut self, event_id: &str, joined_at_ms: i64) {
        self.guard.push(event_id.into(), joined_at_ms);
    }

    fn restore_expired(
        &mut self,
        outcome: bool,
        event_id: &str,
        model: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let number = if model.is_none() {
            NONE
        } else {
            self.models.hold(model_name(model)?, || Ok(model.clone().unbind()))?
        };
        self.expired.push(Dropped { outcome, id: event_id.into(), model: number });
        Ok(())
    }

    fn finish_restore(&mut self) {
        self.next_deadline_ms = self.earliest_deadline_ms();
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
    m.add_class::<batch::Router>()?;
    m.add_function(wrap_pyfunction!(windows::rings_add, m)?)?;
    m.add_function(wrap_pyfunction!(windows::rings_add_binned, m)?)?;
    m.add_function(wrap_pyfunction!(cusum::cusum_update, m)?)?;
    m.add_function(wrap_pyfunction!(scan::quick_read_agrees, m)?)?;
    m.add("INDEX_SLACK", side::INDEX_SLACK)?;
    m.add(
        "PREDICTION_SLOT_BYTES",
        std::mem::size_of::<side::Slot<PredictionData>>(),
    )?;
    Ok(())
}
