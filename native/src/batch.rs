//! The pipeline's per-message path, natively: route, decode, join, judge.
//!
//! `Router.process` takes a batch of Kafka messages and walks it from a
//! given index, doing for each message what `Pipeline._route` does, until it
//! meets one it leaves to Python: a message `decode.rs` does not decode with
//! certainty (invalid ones among them), a timestamp past the allowed skew, a
//! model not yet admitted, a partition without state. It returns that
//! message's index; the pipeline handles the message in Python and calls
//! again from the next one. What it gathers (joined events and predictions
//! per series, counters, labels that do not fit) stays in the router until
//! `take` hands it over once per batch.

use std::collections::HashMap;

use compact_str::CompactString;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyList, PyString, PyTuple, PyType};

use crate::decode::{self, DecodedPrediction, Fields, Label};
use crate::{Added, JoinCore, ModelName, Names, NewPrediction, PredictionData, NONE, NO_PROBABILITIES};

/// (partition, the router's number of the model, segment).
type SeriesKey = (i64, u32, Names);

/// Columns kept for reuse across batches, at most this many of each kind and
/// this many values long: a batch's series then rarely grow their vectors
/// from empty, and what is kept stays small (at most about 16 MiB: 41 bytes
/// a value for the joined columns, and for the predicted ones at least two
/// probabilities an event).
const SPARE_COLUMNS: usize = 256;
const SPARE_CAPACITY: usize = 1024;

#[derive(Default)]
struct Joined {
    timestamps_ms: Vec<i64>,
    p_true: Vec<f64>,
    delays_s: Vec<f64>,
    scores: Vec<f64>,
    positives: Vec<bool>,
    squared_errors: Vec<f64>,
}

#[derive(Default)]
struct Predicted {
    timestamps_ms: Vec<i64>,
    scores: Vec<f64>,
    probabilities: Vec<f64>,
    sizes: Vec<i64>,
}

/// A map that iterates in insertion order, as the Python path's dicts do:
/// series and models reach the windows, the checkpoint and the counters in
/// the order they were first seen either way.
struct Ordered<K, V> {
    index: hashbrown::HashMap<K, usize>,
    entries: Vec<(K, V)>,
}

impl<K, V> Default for Ordered<K, V> {
    fn default() -> Self {
        Ordered { index: hashbrown::HashMap::new(), entries: Vec::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Default> Ordered<K, V> {
    fn entry(&mut self, key: K) -> &mut V {
        self.entry_or(key, V::default)
    }

    /// The value under `key`, made by `new` if there is none.
    fn entry_or(&mut self, key: K, new: impl FnOnce() -> V) -> &mut V {
        let at = match self.index.get(&key) {
            Some(&at) => at,
            None => {
                self.entries.push((key.clone(), new()));
                self.index.insert(key, self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        &mut self.entries[at].1
    }
}

#[derive(Default)]
struct Results {
    joined: Ordered<SeriesKey, Joined>,
    predicted: Ordered<SeriesKey, Predicted>,
    predictions: Ordered<u32, u64>,
    outcomes: u64,
    duplicate_predictions: u64,
    duplicate_outcomes: u64,
    evicted: Ordered<Option<ModelName>, u64>,
    guard_evictions: u64,
    redelivered: u64,
    invalid: Vec<(usize, &'static str)>,
    touched: Vec<i64>,
}

impl Joined {
    fn clear(&mut self) {
        self.timestamps_ms.clear();
        self.p_true.clear();
        self.delays_s.clear();
        self.scores.clear();
        self.positives.clear();
        self.squared_errors.clear();
    }

    fn capacity(&self) -> usize {
        self.timestamps_ms.capacity()
    }
}

impl Predicted {
    fn clear(&mut self) {
        self.timestamps_ms.clear();
        self.scores.clear();
        self.probabilities.clear();
        self.sizes.clear();
    }

    fn capacity(&self) -> usize {
        self.probabilities.capacity()
    }
}

/// Keep `columns`, emptied, for the next batch, if there is room.
fn keep_spare<T>(spare: &mut Vec<T>, mut columns: T, clear: fn(&mut T), capacity: fn(&T) -> usize) {
    if spare.len() < SPARE_COLUMNS && capacity(&columns) <= SPARE_CAPACITY {
        clear(&mut columns);
        spare.push(columns);
    }
}

struct Judged {
    p_true: f64,
    score: f64,
    positive: bool,
    squared_error: f64,
}

enum LabelRef<'a> {
    Bool(bool),
    Int(i128),
    Text(&'a str),
}

/// The positive-class truth of a label, as `records.resolve_binary_label`.
fn binary_truth(label: &LabelRef<'_>, positive: Option<&str>, negative: Option<&str>) -> Option<bool> {
    match label {
        LabelRef::Bool(flag) => Some(*flag),
        LabelRef::Int(1) => Some(true),
        LabelRef::Int(0) => Some(false),
        LabelRef::Int(_) => None,
        LabelRef::Text(text) => {
            if positive == Some(*text) {
                return Some(true);
            }
            if negative == Some(*text) {
                return Some(false);
            }
            match text.to_lowercase().as_str() {
                "1" | "true" => Some(true),
                "0" | "false" => Some(false),
                _ => None,
            }
        }
    }
}

/// `x ** 2` as Python computes it: libm's `pow`, which can differ from
/// `x * x` by an ulp. The exponent is hidden from the optimiser, which would
/// otherwise turn the call into the product.
fn python_square(x: f64) -> f64 {
    x.powf(std::hint::black_box(2.0))
}

/// As `batches.judge`: the event's loss inputs, or the invalid reason.
fn judge(
    probability: Option<f64>,
    multiclass: Option<(&[CompactString], &[f64])>,
    label: &LabelRef<'_>,
    labels: Option<&(Option<String>, Option<String>)>,
) -> Result<Judged, &'static str> {
    if let Some((classes, probabilities)) = multiclass {
        let name: CompactString = match label {
            LabelRef::Bool(_) => return Err("unknown_class"),
            LabelRef::Int(value) => value.to_string().into(),
            LabelRef::Text(text) => (*text).into(),
        };
        let index = classes.iter().position(|class| *class == name).ok_or("unknown_class")?;
        let p_true = *probabilities.get(index).ok_or("unknown_class")?;
        let mut top = f64::NEG_INFINITY;
        let mut top_index = 0;
        for (at, &q) in probabilities.iter().enumerate() {
            if q > top {
                top = q;
                top_index = at;
            }
        }
        let squares: f64 = probabilities.iter().fold(0.0, |sum, q| sum + q * q);
        return Ok(Judged {
            p_true,
            score: top,
            positive: top_index == index,
            squared_error: squares - 2.0 * p_true + 1.0,
        });
    }
    let (positive_label, negative_label) = match labels {
        Some((positive, negative)) => (positive.as_deref(), negative.as_deref()),
        None => (None, None),
    };
    let (Some(positive), Some(p)) = (binary_truth(label, positive_label, negative_label), probability) else {
        return Err("bad_label");
    };
    Ok(Judged {
        p_true: if positive { p } else { 1.0 - p },
        score: p,
        positive,
        squared_error: if positive { python_square(p - 1.0) } else { p * p },
    })
}

/// Class-name tuples the router keeps made (beyond, each is made when needed).
const CLASS_TUPLES_KEPT: usize = 1024;

/// The partition's state while its messages are walked.
struct Current<'py> {
    partition: i64,
    state: Bound<'py, PyAny>,
    core: PyRefMut<'py, JoinCore>,
    prediction_watermark_ms: i64,
    outcome_watermark_ms: i64,
    next_prediction: Option<i64>,
    next_outcome: Option<i64>,
    offsets_moved: bool,
}

impl Current<'_> {
    fn flush(&self) -> PyResult<()> {
        self.state.setattr("prediction_watermark_ms", self.prediction_watermark_ms)?;
        self.state.setattr("outcome_watermark_ms", self.outcome_watermark_ms)?;
        if self.offsets_moved {
            let offsets = self.state.getattr("next_offsets")?;
            if let Some(offset) = self.next_prediction {
                offsets.set_item("prediction", offset)?;
            }
            if let Some(offset) = self.next_outcome {
                offsets.set_item("outcome", offset)?;
            }
        }
        Ok(())
    }
}

fn load<'py>(state: Bound<'py, PyAny>, partition: i64) -> PyResult<Current<'py>> {
    let core = state.getattr("join")?.getattr("_core")?.cast_into::<JoinCore>()?.borrow_mut();
    let offsets = state.getattr("next_offsets")?.cast_into::<PyDict>()?;
    let offset = |side: &str| -> PyResult<Option<i64>> {
        match offsets.get_item(side)? {
            Some(value) => Ok(Some(value.extract()?)),
            None => Ok(None),
        }
    };
    Ok(Current {
        partition,
        prediction_watermark_ms: state.getattr("prediction_watermark_ms")?.extract()?,
        outcome_watermark_ms: state.getattr("outcome_watermark_ms")?.extract()?,
        next_prediction: offset("prediction")?,
        next_outcome: offset("outcome")?,
        offsets_moved: false,
        state,
        core,
    })
}


/// A column as the bytes of its values (native byte order), for
/// `numpy.frombuffer`: no Python object per value.
fn column<'py, T: Copy, const N: usize>(
    py: Python<'py>,
    values: &[T],
    to_bytes: impl Fn(T) -> [u8; N],
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, values.len() * N, |bytes| {
        for (place, &value) in bytes.chunks_exact_mut(N).zip(values) {
            place.copy_from_slice(&to_bytes(value));
        }
        Ok(())
    })
}

/// `decode(key, kafka_timestamp_ms)` of a message, asking the message for
/// its key and Kafka timestamp only if it cannot be decoded without them.
///
/// They stand in for a missing event id or timestamp only, so a decode that
/// succeeds without them never consulted them; most messages carry both.
fn decode_lazily<T>(
    py: Python<'_>,
    message: &Bound<'_, PyAny>,
    decode: impl Fn(Option<&[u8]>, Option<i64>) -> Option<T>,
) -> PyResult<Option<T>> {
    if let Some(decoded) = decode(None, None) {
        return Ok(Some(decoded));
    }
    let (kind, value): (i64, i64) = message.call_method0(intern!(py, "timestamp"))?.extract()?;
    let kafka_timestamp_ms = (kind != 0 && value >= 0).then_some(value);
    let key = message.call_method0(intern!(py, "key"))?;
    Ok(decode(key.cast::<PyBytes>().ok().map(|key| key.as_bytes()), kafka_timestamp_ms))
}

/// A decoded label as the Python value `records.py` would give.
fn label_object(py: Python<'_>, label: &Label) -> Py<PyAny> {
    match label {
        Label::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any().unbind(),
        Label::Int(value) => value.into_pyobject(py).expect("an int converts").into_any().unbind(),
        Label::Str(text) => PyString::new(py, text).into_any().unbind(),
    }
}

/// A model key the router has met.
struct Model {
    object: Py<PyAny>,
    /// Whether its predictions go through natively (see `admit`); a model
    /// met only as a joined prediction's (made by the Python path) is not.
    admitted: bool,
    /// The (positive, negative) labels configured for its name.
    labels: Option<(Option<String>, Option<String>)>,
}

/// How the walk calls a message's `topic()`, `partition()`, `offset()` and
/// `value()`. For confluent-kafka's own `Message` (a C type, without
/// instance attributes) the type's method descriptors are called straight
/// with the message, skipping the attribute lookup of each call; any other
/// message (a test double, a subclass) is asked by name, as Python would.
/// So is every message if `Message` is not of that shape (a future
/// confluent-kafka might make it a Python class, or a method a property).
struct Methods {
    message_type: Option<Py<PyType>>,
    topic: Option<Py<PyAny>>,
    partition: Option<Py<PyAny>>,
    offset: Option<Py<PyAny>>,
    value: Option<Py<PyAny>>,
}

impl Methods {
    fn new(py: Python<'_>) -> Self {
        Self::direct(py).ok().flatten().unwrap_or(Methods {
            message_type: None,
            topic: None,
            partition: None,
            offset: None,
            value: None,
        })
    }

    /// The descriptors of confluent-kafka's `Message`, if it has the shape
    /// they are called for.
    fn direct(py: Python<'_>) -> PyResult<Option<Self>> {
        let message_type = py.import("confluent_kafka")?.getattr("Message")?.cast_into::<PyType>()?;
        if message_type.getattr("__dictoffset__")?.extract::<isize>()? != 0 {
            return Ok(None);
        }
        // The type of a C method, such as `str.join`.
        let c_method = py.get_type::<PyString>().getattr("join")?.get_type();
        let method = |name: &str| -> PyResult<Option<Py<PyAny>>> {
            let found = message_type.getattr(name)?;
            Ok(found.get_type().is(&c_method).then(|| found.unbind()))
        };
        let (Some(topic), Some(partition), Some(offset), Some(value)) =
            (method("topic")?, method("partition")?, method("offset")?, method("value")?)
        else {
            return Ok(None);
        };
        Ok(Some(Methods {
            message_type: Some(message_type.unbind()),
            topic: Some(topic),
            partition: Some(partition),
            offset: Some(offset),
            value: Some(value),
        }))
    }

    /// `message.<name>()`; `method` is the type's descriptor of `name`.
    fn call<'py>(
        &self,
        message: &Bound<'py, PyAny>,
        method: &Option<Py<PyAny>>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = message.py();
        match (method, &self.message_type) {
            (Some(method), Some(message_type)) if message.get_type().is(message_type.bind(py)) => {
                let args = [message.as_ptr()];
                // SAFETY: one borrowed argument that outlives the call; the
                // result is a new reference or NULL with an exception set.
                unsafe {
                    let result = pyo3::ffi::PyObject_Vectorcall(method.as_ptr(), args.as_ptr(), 1, std::ptr::null_mut());
                    Bound::from_owned_ptr_or_err(py, result)
                }
            }
            _ => message.call_method0(name),
        }
    }
}

#[pyclass(module = "streamer._native")]
pub struct Router {
    fields: Fields,
    sum_tolerance: f64,
    segment_keys: Vec<String>,
    predictions_topic: String,
    segment_admit: Option<Py<PyAny>>,
    labels: HashMap<String, (Option<String>, Option<String>)>,
    /// The model keys met, numbered in the order met, with the pipeline's
    /// `ModelKey` of each: the join holds that object, so none is made per
    /// message, and a batch's results are keyed by the numbers.
    models: Vec<Model>,
    numbers: hashbrown::HashMap<ModelName, u32>,
    admitted: usize,
    /// Class-name tuples made so far (a bounded number), for the same reason.
    class_tuples: hashbrown::HashMap<Names, Py<PyAny>>,
    latest_valid_ms: i64,
    results: Results,
    newest: Newest,
    model_key_type: Py<PyAny>,
    methods: Methods,
    spare_joined: Vec<Joined>,
    spare_predicted: Vec<Predicted>,
}

impl Router {
    fn walk<'py>(
        &mut self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        start: usize,
        partitions: &Bound<'py, PyDict>,
        loaded: &mut Vec<Current<'py>>,
    ) -> PyResult<usize> {
        let mut index = start;
        let stop = loop {

            if index >= messages.len() {
                break index;
            }
            let message = messages.get_item(index)?;
            let methods = &self.methods;
            let given_partition: Option<i64> =
                methods.call(&message, &methods.partition, intern!(py, "partition"))?.extract()?;
            let partition = given_partition.unwrap_or(0);
            // Messages of several partitions may interleave: each partition's
            // state is loaded once per walk and written back at its end.
            let at = match loaded.iter().position(|c| c.partition == partition) {
                Some(at) => at,
                None => {
                    let Some(state) = partitions.get_item(partition)? else { break index };
                    loaded.push(load(state, partition)?);
                    loaded.len() - 1
                }
            };
            let current_state = &mut loaded[at];
            let topic = methods.call(&message, &methods.topic, intern!(py, "topic"))?;
            let is_prediction = !topic.is_none() && topic.cast::<PyString>()?.to_str()? == self.predictions_topic;
            let offset: Option<i64> = methods.call(&message, &methods.offset, intern!(py, "offset"))?.extract()?;
            if let (Some(partition), Some(offset)) = (given_partition, offset) {
                self.newest.note(&topic, partition, offset)?;
            }
            let offset = offset.filter(|&offset| offset >= 0);
            if let Some(offset) = offset {
                let next = if is_prediction { current_state.next_prediction } else { current_state.next_outcome };
                if offset < next.unwrap_or(-1) {
                    self.results.redelivered += 1;
                    if !self.results.touched.contains(&partition) {
                self.results.touched.push(partition);
            }
                    index += 1;
                    continue;
                }
            }
            let value_object = self.methods.call(&message, &self.methods.value, intern!(py, "value"))?;
            let Ok(value) = value_object.cast::<PyBytes>() else { break index };
            let value = value.as_bytes();
            let handled = if is_prediction {
                let decoded = decode_lazily(py, &message, |key, kafka_timestamp_ms| {
                    decode::prediction(&self.fields, self.sum_tolerance, &self.segment_keys, value, key, kafka_timestamp_ms)
                })?;
                match decoded {
                    Some(decoded) => self.prediction(py, index, current_state, decoded, offset)?,
                    None => false,
                }
            } else {
                let decoded = decode_lazily(py, &message, |key, kafka_timestamp_ms| {
                    decode::outcome(&self.fields, value, key, kafka_timestamp_ms)
                })?;
                match decoded {
                    Some(decoded) => self.outcome(py, index, current_state, decoded, offset)?,
                    None => false,
                }
            };
            if !handled {
                break index;
            }
            if !self.results.touched.contains(&partition) {
                self.results.touched.push(partition);
            }
            index += 1;
        };
        Ok(stop)
    }

    fn model_object(&self, py: Python<'_>, name: &ModelName) -> PyResult<Py<PyAny>> {
        if let Some(&number) = self.numbers.get(name) {
            return Ok(self.models[number as usize].object.clone_ref(py));
        }
        Ok(self.model_key_type.bind(py).call1((name.0.as_str(), name.1.as_str()))?.unbind())
    }

    /// The number of a model key, met now if not before.
    fn number(&mut self, name: &ModelName, object: impl FnOnce() -> Py<PyAny>) -> u32 {
        if let Some(&number) = self.numbers.get(name) {
            return number;
        }
        let number = self.models.len() as u32;
        self.models.push(Model { object: object(), admitted: false, labels: self.labels.get(name.0.as_str()).cloned() });
        self.numbers.insert(name.clone(), number);
        number
    }

    fn names_tuple(py: Python<'_>, names: &[CompactString]) -> PyResult<Py<PyAny>> {
        Ok(PyTuple::new(py, names.iter().map(|name| name.as_str()))?.into_any().unbind())
    }

    fn joined_into(&mut self, key: SeriesKey, judged: &Judged, outcome_ms: i64, prediction_ms: i64) {
        let spare = &mut self.spare_joined;
        let joined = self.results.joined.entry_or(key, || spare.pop().unwrap_or_default());
        joined.timestamps_ms.push(outcome_ms);
        joined.p_true.push(judged.p_true);
        joined.scores.push(judged.score);
        joined.positives.push(judged.positive);
        joined.squared_errors.push(judged.squared_error);
        joined.delays_s.push((outcome_ms - prediction_ms).max(0) as f64 / 1000.0);
    }

    fn count_evicted(&mut self, core: &JoinCore, dropped: &[crate::Dropped]) {
        for entry in dropped {
            let model = (entry.model != NONE).then(|| core.models.key(entry.model).clone());
            *self.results.evicted.entry(model) += 1;
        }
    }

    /// One prediction message; false when Python must take it.
    fn prediction(
        &mut self,
        py: Python<'_>,
        index: usize,
        current: &mut Current<'_>,
        decoded: DecodedPrediction,
        offset: Option<i64>,
    ) -> PyResult<bool> {
        let name: ModelName = (decoded.model, decoded.version);
        if decoded.timestamp_ms > self.latest_valid_ms {
            return Ok(false);
        }
        let Some(&number) = self.numbers.get(&name) else {
            return Ok(false);
        };
        let entry = &self.models[number as usize];
        if !entry.admitted {
            return Ok(false);
        }
        let model_object = entry.object.clone_ref(py);
        let segment: Names = match (&self.segment_admit, decoded.segment.is_empty()) {
            (Some(admit), false) => {
                let raw = Self::names_tuple(py, &decoded.segment)?;
                let kept = admit.bind(py).call1((raw,))?;
                crate::names(&kept)?
            }
            _ => decoded.segment.into_boxed_slice(),
        };
        if let Some(offset) = offset {
            current.next_prediction = Some(offset + 1);
            current.offsets_moved = true;
        }
        current.prediction_watermark_ms = current.prediction_watermark_ms.max(decoded.timestamp_ms);
        let now_ms = current.prediction_watermark_ms.min(current.outcome_watermark_ms);

        let core = &mut *current.core;
        // A prediction that meets its outcome (or is a duplicate) is never
        // stored, so it holds no numbers in the join's registries.
        let added = match core.meet_prediction(&decoded.id, now_ms) {
            Some(met) => met,
            None => {
                let model = core.models.hold(name.clone(), || Ok(model_object))?;
                let classes = match &decoded.classes {
                    Some(classes) => {
                        let key: Names = classes.clone().into_boxed_slice();
                        let cache = &mut self.class_tuples;
                        core.classes.hold(key, || {
                            if let Some(tuple) = cache.get(classes.as_slice()) {
                                return Ok(tuple.clone_ref(py));
                            }
                            let tuple = Self::names_tuple(py, classes)?;
                            if cache.len() < CLASS_TUPLES_KEPT {
                                cache.insert(classes.clone().into_boxed_slice(), tuple.clone_ref(py));
                            }
                            Ok(tuple)
                        })?
                    }
                    None => NONE,
                };
                let segment_number = core.segments.hold(segment.clone(), || Self::names_tuple(py, &segment))?;
                core.store_prediction(NewPrediction {
                    id: &decoded.id,
                    timestamp_ms: decoded.timestamp_ms,
                    model,
                    classes,
                    segment: segment_number,
                    probability: decoded.probability,
                    probabilities: decoded.probabilities.as_deref(),
                })?
            }
        };
        let key: SeriesKey = (current.partition, number, segment);
        if !matches!(added, Added::Duplicate) {
            *self.results.predictions.entry(number) += 1;
            let spare = &mut self.spare_predicted;
            let predicted = self.results.predicted.entry_or(key.clone(), || spare.pop().unwrap_or_default());
            if let Some(probabilities) = &decoded.probabilities {
                predicted.timestamps_ms.push(decoded.timestamp_ms);
                predicted.scores.push(probabilities.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                predicted.probabilities.extend_from_slice(probabilities);
                predicted.sizes.push(probabilities.len() as i64);
            } else if let Some(p) = decoded.probability {
                predicted.timestamps_ms.push(decoded.timestamp_ms);
                predicted.scores.push(p);
                predicted.probabilities.extend_from_slice(&[p, 1.0 - p]);
                predicted.sizes.push(2);
            }
        }
        match added {
            Added::Held => {}
            Added::Duplicate => self.results.duplicate_predictions += 1,
            Added::Evicted(dropped) => {
                self.count_evicted(&current.core, &dropped);
                for entry in &dropped {
                    current.core.models.release(entry.model);
                }
            }
            Added::Joined { partner, forgotten } => {
                self.results.guard_evictions += forgotten as u64;
                let label_object = partner.data.as_ref().expect("a pending outcome has its label").bind(py);
                let text;
                let label = if let Ok(flag) = label_object.cast::<PyBool>() {
                    LabelRef::Bool(flag.is_true())
                } else if let Ok(int) = label_object.cast::<PyInt>() {
                    match int.extract::<i128>() {
                        Ok(value) => LabelRef::Int(value),
                        Err(_) => {
                            text = int.str()?.to_string();
                            LabelRef::Text(&text)
                        }
                    }
                } else {
                    text = label_object.cast::<PyString>()?.to_str()?.to_owned();
                    LabelRef::Text(&text)
                };
                // A Python int too large for i128 is judged by its digits, as
                // str(label) would be; binary labels of that size are bad anyway.
                let multiclass = match (&decoded.classes, &decoded.probabilities) {
                    (Some(classes), Some(probabilities)) => Some((classes.as_slice(), probabilities.as_slice())),
                    _ => None,
                };
                let labels = self.models[number as usize].labels.as_ref();
                match judge(decoded.probability, multiclass, &label, labels) {
                    Ok(judged) => self.joined_into(key, &judged, partner.timestamp_ms, decoded.timestamp_ms),
                    Err(reason) => self.results.invalid.push((index, reason)),
                }
            }
        }
        Ok(true)
    }

    /// One outcome message; false when Python must take it.
    fn outcome(
        &mut self,
        py: Python<'_>,
        index: usize,
        current: &mut Current<'_>,
        decoded: decode::DecodedOutcome,
        offset: Option<i64>,
    ) -> PyResult<bool> {
        if decoded.timestamp_ms > self.latest_valid_ms {
            return Ok(false);
        }
        if let Some(offset) = offset {
            current.next_outcome = Some(offset + 1);
            current.offsets_moved = true;
        }
        current.outcome_watermark_ms = current.outcome_watermark_ms.max(decoded.timestamp_ms);
        let now_ms = current.prediction_watermark_ms.min(current.outcome_watermark_ms);
        let added = current.core.add_outcome_record(
            &decoded.id,
            || label_object(py, &decoded.label),
            decoded.timestamp_ms,
            now_ms,
        );
        if !matches!(added, Added::Duplicate) {
            self.results.outcomes += 1;
        }
        match added {
            Added::Held => {}
            Added::Duplicate => self.results.duplicate_outcomes += 1,
            Added::Evicted(dropped) => self.count_evicted(&current.core, &dropped),
            Added::Joined { partner, forgotten } => {
                self.results.guard_evictions += forgotten as u64;
                let data: PredictionData = partner.data;
                let core = &current.core;
                let name = core.models.key(data.model);
                let number = self.number(name, || core.models.object(py, data.model));
                let segment = core.segments.key(data.segment).clone();
                let (probability, probabilities) = core.probability_and_probabilities(&data);
                let multiclass = match (data.classes != NONE, probabilities) {
                    (true, Some(probabilities)) if data.probabilities_len != NO_PROBABILITIES => {
                        Some((&core.classes.key(data.classes)[..], probabilities))
                    }
                    _ => None,
                };
                let label = match &decoded.label {
                    Label::Bool(flag) => LabelRef::Bool(*flag),
                    Label::Int(value) => LabelRef::Int(*value),
                    Label::Str(text) => LabelRef::Text(text),
                };
                let judged = judge(probability, multiclass, &label, self.models[number as usize].labels.as_ref());
                current.core.release_prediction(&data);
                match judged {
                    Ok(judged) => {
                        let key = (current.partition, number, segment);
                        self.joined_into(key, &judged, decoded.timestamp_ms, partner.timestamp_ms);
                    }
                    Err(reason) => self.results.invalid.push((index, reason)),
                }
            }
        }
        Ok(true)
    }
}

#[pymethods]
impl Router {
    /// `fields`: the eight field names in `FieldsConfig` order (event_id,
    /// model, model_version, timestamp, probability, probabilities, label,
    /// segment); `labels`: model name -> (positive_label, negative_label).
    #[new]
    #[pyo3(signature = (fields, sum_tolerance, segment_keys, predictions_topic, segment_admit, labels, model_key_type))]
    fn new(
        fields: (String, String, String, String, String, String, String, String),
        sum_tolerance: f64,
        segment_keys: Vec<String>,
        predictions_topic: String,
        segment_admit: Option<Py<PyAny>>,
        labels: HashMap<String, (Option<String>, Option<String>)>,
        model_key_type: Bound<'_, PyAny>,
    ) -> Self {
        let (event_id, model, model_version, timestamp, probability, probabilities, label, segment) = fields;
        Router {
            fields: Fields { event_id, model, model_version, timestamp, probability, probabilities, label, segment },
            sum_tolerance,
            segment_keys,
            predictions_topic,
            segment_admit,
            labels,
            models: Vec::new(),
            numbers: hashbrown::HashMap::new(),
            admitted: 0,
            class_tuples: hashbrown::HashMap::new(),
            latest_valid_ms: i64::MAX,
            results: Results::default(),
            newest: Newest::default(),
            methods: Methods::new(model_key_type.py()),
            model_key_type: model_key_type.unbind(),
            spare_joined: Vec::new(),
            spare_predicted: Vec::new(),
        }
    }

    /// Let predictions of this model key through natively from now on.
    fn admit(&mut self, model: &Bound<'_, PyAny>) -> PyResult<()> {
        let name = crate::model_name(model)?;
        let number = self.number(&name, || model.clone().unbind());
        let entry = &mut self.models[number as usize];
        if !entry.admitted {
            entry.admitted = true;
            entry.object = model.clone().unbind();
            self.admitted += 1;
        }
        Ok(())
    }

    #[getter]
    fn admitted_models(&self) -> usize {
        self.admitted
    }

    /// Start a batch: timestamps after `latest_valid_ms` go to Python.
    fn begin(&mut self, latest_valid_ms: i64) {
        self.latest_valid_ms = latest_valid_ms;
        self.results = Results::default();
    }

    /// Note the place of a message the Python path took (the compiled path
    /// notes those it reads): its topic, partition and offset, if it has them.
    fn note_offset(&mut self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let topic = message.call_method0(intern!(py, "topic"))?;
        let partition: Option<i64> = message.call_method0(intern!(py, "partition"))?.extract()?;
        let offset: Option<i64> = message.call_method0(intern!(py, "offset"))?.extract()?;
        if let (Some(partition), Some(offset)) = (partition, offset) {
            self.newest.note(&topic, partition, offset)?;
        }
        Ok(())
    }

    /// The next offset to store per (topic, partition) read since the last
    /// call, one past the newest, in first-seen order; and forget them.
    fn take_offsets(&mut self) -> Vec<(Py<PyAny>, i64, i64)> {
        std::mem::take(&mut self.newest)
            .entries
            .into_iter()
            .map(|(_, topic, partition, next)| (topic, partition, next))
            .collect()
    }

    /// Walk `messages` from `start`; the index of the first message left to
    /// Python, or `len(messages)`.
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        start: usize,
        partitions: &Bound<'py, PyDict>,
    ) -> PyResult<usize> {
        let mut loaded: Vec<Current<'py>> = Vec::new();
        let walked = self.walk(py, messages, start, partitions, &mut loaded);
        // The partitions' clocks and offsets go back to their states even when
        // a message method raised: what the join already took stays counted.
        for current in &loaded {
            current.flush()?;
        }
        walked
    }

    /// What the batch gathered, as Python values, and forget it: a dict of
    /// `joined`, `predicted` (per (partition, model, segment), each column
    /// the bytes of its int64, float64 or bool values), counters,
    /// `invalid` (index, reason) and `touched` partitions.
    fn take<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let results = std::mem::take(&mut self.results);
        let out = PyDict::new(py);
        let model = |number: u32| self.models[number as usize].object.clone_ref(py);
        let joined = PyList::empty(py);
        for ((partition, number, segment), rows) in results.joined.entries {
            joined.append((
                partition,
                model(number),
                Self::names_tuple(py, &segment)?,
                column(py, &rows.timestamps_ms, i64::to_ne_bytes)?,
                column(py, &rows.p_true, f64::to_ne_bytes)?,
                column(py, &rows.delays_s, f64::to_ne_bytes)?,
                column(py, &rows.scores, f64::to_ne_bytes)?,
                column(py, &rows.positives, |flag: bool| [u8::from(flag)])?,
                column(py, &rows.squared_errors, f64::to_ne_bytes)?,
            ))?;
            keep_spare(&mut self.spare_joined, rows, Joined::clear, Joined::capacity);
        }
        out.set_item("joined", joined)?;
        let predicted = PyList::empty(py);
        for ((partition, number, segment), rows) in results.predicted.entries {
            predicted.append((
                partition,
                model(number),
                Self::names_tuple(py, &segment)?,
                column(py, &rows.timestamps_ms, i64::to_ne_bytes)?,
                column(py, &rows.scores, f64::to_ne_bytes)?,
                column(py, &rows.probabilities, f64::to_ne_bytes)?,
                column(py, &rows.sizes, i64::to_ne_bytes)?,
            ))?;
            keep_spare(&mut self.spare_predicted, rows, Predicted::clear, Predicted::capacity);
        }
        out.set_item("predicted", predicted)?;
        let predictions = PyList::empty(py);
        for (number, count) in results.predictions.entries {
            predictions.append((model(number), count))?;
        }
        out.set_item("predictions", predictions)?;
        let evicted = PyList::empty(py);
        for (name, count) in results.evicted.entries {
            match name {
                Some(name) => evicted.append(("prediction", self.model_object(py, &name)?, count))?,
                None => evicted.append(("outcome", py.None(), count))?,
            }
        }
        out.set_item("evicted", evicted)?;
        out.set_item("outcomes", results.outcomes)?;
        out.set_item("duplicate_predictions", results.duplicate_predictions)?;
        out.set_item("duplicate_outcomes", results.duplicate_outcomes)?;
        out.set_item("guard_evictions", results.guard_evictions)?;
        out.set_item("redelivered", results.redelivered)?;
        out.set_item("invalid", results.invalid)?;
        out.set_item("touched", results.touched)?;
        Ok(out)
    }

    /// The native decoder alone, for tests: the prediction's fields as a
    /// tuple, or None where Python decides.
    #[pyo3(signature = (value, key, kafka_timestamp_ms))]
    fn decode_prediction(
        &self,
        py: Python<'_>,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        kafka_timestamp_ms: Option<i64>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let Some(decoded) = value.and_then(|value| {
            decode::prediction(&self.fields, self.sum_tolerance, &self.segment_keys, value, key, kafka_timestamp_ms)
        }) else {
            return Ok(None);
        };
        let classes = match &decoded.classes {
            Some(classes) => Self::names_tuple(py, classes)?,
            None => py.None(),
        };
        let probabilities = match &decoded.probabilities {
            Some(values) => PyTuple::new(py, values)?.into_any().unbind(),
            None => py.None(),
        };
        let fields = (
            decoded.id.as_str(),
            decoded.model.as_str(),
            decoded.version.as_str(),
            decoded.timestamp_ms,
            decoded.probability,
            classes,
            probabilities,
            Self::names_tuple(py, &decoded.segment)?,
        );
        Ok(Some(fields.into_pyobject(py)?.into_any().unbind()))
    }

    /// The native decoder alone, for tests: `(event_id, label,
    /// timestamp_ms)`, or None where Python decides.
    #[pyo3(signature = (value, key, kafka_timestamp_ms))]
    fn decode_outcome(
        &self,
        py: Python<'_>,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        kafka_timestamp_ms: Option<i64>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let Some(decoded) = value.and_then(|value| decode::outcome(&self.fields, value, key, kafka_timestamp_ms)) else {
            return Ok(None);
        };
        let label = label_object(py, &decoded.label);
        Ok(Some((decoded.id.as_str(), label, decoded.timestamp_ms).into_pyobject(py)?.into_any().unbind()))
    }
}

/// The next offset to store per (topic, partition) after a batch: one past
/// the newest offset read, in first-seen order. A batch holds few (topic,
/// partition) pairs, mostly in runs, so the last one found is tried first.
#[derive(Default)]
struct Newest {
    entries: Vec<(String, Py<PyAny>, i64, i64)>,
    last: usize,
}

impl Newest {
    /// Note one message's place; one without a topic is left out. Noting a
    /// message twice changes nothing.
    fn note(&mut self, topic: &Bound<'_, PyAny>, partition: i64, offset: i64) -> PyResult<()> {
        if topic.is_none() {
            return Ok(());
        }
        let text = topic.cast::<PyString>()?.to_str()?;
        let same = |entry: &(String, Py<PyAny>, i64, i64)| entry.2 == partition && entry.0 == text;
        let found = match self.entries.get(self.last) {
            Some(entry) if same(entry) => Some(self.last),
            _ => self.entries.iter().position(same),
        };
        match found {
            Some(index) => {
                self.last = index;
                let entry = &mut self.entries[index];
                entry.3 = entry.3.max(offset + 1);
            }
            None => {
                self.last = self.entries.len();
                self.entries.push((text.to_owned(), topic.clone().unbind(), partition, offset + 1));
            }
        }
        Ok(())
    }
}
