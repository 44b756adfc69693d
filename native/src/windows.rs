//! One window ring's `add`, in place on the ring's numpy arrays.
//!
//! `streamer/windows.py` keeps each window's slots as numpy arrays (its
//! module docstring gives the semantics) and computes everything else from
//! them; only adding a batch is done here, since the numpy form of it costs
//! some twenty array operations per window and series, whatever the batch's
//! size. The arithmetic is the numpy form's, operation for operation, so the
//! slots come out bit for bit the same: each bucket's batch sums start at 0
//! and add the events in arrival order (as `numpy.bincount` does), and a slot
//! that already holds the bucket adds the batch's sum to what it holds.

use std::ptr::NonNull;

use pyo3::buffer::{Element, PyBuffer};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Where a writable, C-contiguous buffer's items are.
fn writable<T: Element>(buffer: &PyBuffer<T>, name: &str) -> PyResult<NonNull<[T]>> {
    if buffer.readonly() {
        return Err(PyValueError::new_err(format!("{name} is read-only")));
    }
    buffer
        .as_slice_ptr()
        .ok_or_else(|| PyValueError::new_err(format!("{name} is not C-contiguous")))
}

fn readable<T: Element + Copy + Default>(buffer: &PyBuffer<T>, py: Python<'_>) -> PyResult<Vec<T>> {
    let mut values = vec![T::default(); buffer.item_count()];
    buffer.copy_to_slice(py, &mut values)?;
    Ok(values)
}

/// One ring's arrays and head, as `streamer.windows._Ring` keeps them.
type RingArgs = (
    PyBuffer<i64>,
    PyBuffer<i64>,
    PyBuffer<f64>,
    PyBuffer<f64>,
    PyBuffer<f64>,
    Option<i64>,
    i64,
);

/// Per ring the late events and new head; the first bad loss and extra index.
type Added = (Vec<(u64, Option<i64>)>, i64, i64);

/// The batch's extra columns, per event.
enum Extra<'a> {
    /// The ring's column count of values per event, one after the other.
    Dense(&'a [f64]),
    /// Per event one value of each `base` column, then one group of
    /// `bin_count` columns per `binned` entry, all 0 but the one of the
    /// event's bin in `bins`, which holds the entry's value for the event
    /// (1 where the entry is `None`: a count). The sums are those of the
    /// dense form exactly, since adding the zeros it holds changes no sum.
    Binned {
        base: &'a [Vec<f64>],
        bins: &'a [usize],
        binned: &'a [Option<Vec<f64>>],
        bin_count: usize,
    },
}

impl Extra<'_> {
    /// Whether it fits `count` events of a ring with `columns` columns.
    fn fits(&self, count: usize, columns: usize) -> bool {
        match self {
            Extra::Dense(values) => values.len() == count * columns,
            Extra::Binned {
                base,
                binned,
                bin_count,
                ..
            } => base.len() + binned.len() * bin_count == columns,
        }
    }

    /// Add event `event`'s extra columns to `sums`, in column order.
    fn add_to(&self, event: usize, sums: &mut [f64]) {
        match self {
            Extra::Dense(values) => {
                let columns = sums.len();
                let row = &values[event * columns..(event + 1) * columns];
                for (sum, value) in sums.iter_mut().zip(row) {
                    *sum += value;
                }
            }
            Extra::Binned {
                base,
                bins,
                binned,
                bin_count,
            } => {
                for (sum, column) in sums.iter_mut().zip(base.iter()) {
                    *sum += column[event];
                }
                let at = base.len() + bins[event];
                for (group, values) in binned.iter().enumerate() {
                    sums[at + group * bin_count] +=
                        values.as_ref().map_or(1.0, |values| values[event]);
                }
            }
        }
    }
}

fn add_to_rings(
    rings: &[RingArgs],
    timestamps_ms: &[i64],
    loss: &[f64],
    extra: &Extra<'_>,
) -> PyResult<Added> {
    if let Some(at) = loss
        .iter()
        .position(|value| !(value.is_finite() && *value >= 0.0))
    {
        return Ok((Vec::new(), at as i64, -1));
    }
    // Every ring is checked before any is changed: an error leaves all as
    // they were.
    let count = timestamps_ms.len();
    if loss.len() != count {
        return Err(PyValueError::new_err(
            "timestamps_ms and loss differ in length",
        ));
    }
    let checked = rings
        .iter()
        .map(|ring| checked_ring(ring, count, extra))
        .collect::<PyResult<Vec<_>>>()?;
    let added = checked
        .into_iter()
        .zip(rings)
        .map(|(ring, (.., head, bucket_ms))| match ring {
            None => (0, *head),
            Some(ring) => ring_add(ring, *head, *bucket_ms, timestamps_ms, loss, extra),
        })
        .collect();
    Ok((added, -1, -1))
}

/// Add one batch to every ring of a key.
///
/// Each ring is `(bucket_ids, events, loss_sums, loss_squared_sums,
/// extra_sums, head, bucket_ms)`: its arrays (one item per slot; slots x
/// columns), changed in place, its head bucket (`None` before its first
/// event) and bucket length. The batch is checked first: with a loss that
/// is not finite and non-negative, or an extra value that is not finite,
/// nothing changes and the first such index is returned (`-1` otherwise);
/// so with a ring whose arrays do not fit (an error). Else the late events
/// and the new head of each ring come back.
#[pyfunction]
pub fn rings_add(
    py: Python<'_>,
    rings: Vec<RingArgs>,
    timestamps_ms: PyBuffer<i64>,
    loss: PyBuffer<f64>,
    extra: PyBuffer<f64>,
) -> PyResult<Added> {
    let timestamps_ms: Vec<i64> = readable(&timestamps_ms, py)?;
    let loss: Vec<f64> = readable(&loss, py)?;
    let extra: Vec<f64> = readable(&extra, py)?;
    if let Some(at) = extra.iter().position(|value| !value.is_finite()) {
        return Ok((Vec::new(), -1, at as i64));
    }
    add_to_rings(&rings, &timestamps_ms, &loss, &Extra::Dense(&extra))
}

/// `rings_add` with binned extra columns (see `Extra::Binned`): `base`
/// and `binned` are columns of one value per event, `None` in `binned` a
/// column of ones; each event's bin is the number of `edges` (ascending)
/// below its `score`, as `numpy.searchsorted(edges, score)` gives it.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn rings_add_binned(
    py: Python<'_>,
    rings: Vec<RingArgs>,
    timestamps_ms: PyBuffer<i64>,
    loss: PyBuffer<f64>,
    base: Vec<PyBuffer<f64>>,
    score: PyBuffer<f64>,
    binned: Vec<Option<PyBuffer<f64>>>,
    edges: PyBuffer<f64>,
) -> PyResult<Added> {
    let timestamps_ms: Vec<i64> = readable(&timestamps_ms, py)?;
    let loss: Vec<f64> = readable(&loss, py)?;
    let count = timestamps_ms.len();
    let column = |buffer: &PyBuffer<f64>| -> PyResult<Vec<f64>> {
        let values = readable(buffer, py)?;
        if values.len() != count {
            return Err(PyValueError::new_err(format!(
                "extra columns must have {count} values, one per event, got {}",
                values.len()
            )));
        }
        Ok(values)
    };
    let base: Vec<Vec<f64>> = base.iter().map(column).collect::<PyResult<_>>()?;
    let score = column(&score)?;
    let binned: Vec<Option<Vec<f64>>> = binned
        .iter()
        .map(|values| values.as_ref().map(column).transpose())
        .collect::<PyResult<_>>()?;
    let edges: Vec<f64> = readable(&edges, py)?;
    let mut values = base.iter().chain(binned.iter().flatten()).flatten();
    if let Some(at) = values.position(|value| !value.is_finite()) {
        return Ok((Vec::new(), -1, at as i64));
    }
    if let Some(at) = score.iter().position(|value| !value.is_finite()) {
        return Ok((Vec::new(), -1, at as i64));
    }
    let bins: Vec<usize> = score
        .iter()
        .map(|&value| edges.partition_point(|&edge| edge < value))
        .collect();
    let extra = Extra::Binned {
        base: &base,
        bins: &bins,
        binned: &binned,
        bin_count: edges.len() + 1,
    };
    add_to_rings(&rings, &timestamps_ms, &loss, &extra)
}

/// Where a ring's slots are, checked for a batch: one item per slot in
/// each array (slots x columns in the extra sums), writable, C-contiguous
/// and distinct.
struct Slots {
    bucket_ids: NonNull<[i64]>,
    events: NonNull<[i64]>,
    loss_sums: NonNull<[f64]>,
    loss_squared_sums: NonNull<[f64]>,
    extra_sums: NonNull<[f64]>,
    slots: usize,
    columns: usize,
}

/// The ring's slots for a batch of `count` events; `None` when the batch
/// is empty (nothing to change).
fn checked_ring(ring: &RingArgs, count: usize, extra: &Extra<'_>) -> PyResult<Option<Slots>> {
    let (bucket_ids, events, loss_sums, loss_squared_sums, extra_sums, _, bucket_ms) = ring;
    if *bucket_ms <= 0 {
        return Err(PyValueError::new_err("bucket_ms must be positive"));
    }
    let slots = bucket_ids.item_count();
    if slots == 0
        || [
            events.item_count(),
            loss_sums.item_count(),
            loss_squared_sums.item_count(),
        ]
        .iter()
        .any(|&length| length != slots)
        || !extra_sums.item_count().is_multiple_of(slots)
    {
        return Err(PyValueError::new_err(
            "the ring's arrays do not have one item per slot",
        ));
    }
    let columns = extra_sums.item_count() / slots;
    if count == 0 {
        return Ok(None);
    }
    if !extra.fits(count, columns) {
        return Err(PyValueError::new_err(format!(
            "the extra columns do not fit {count} events x {columns} columns"
        )));
    }
    let addresses = [
        bucket_ids.buf_ptr() as usize,
        events.buf_ptr() as usize,
        loss_sums.buf_ptr() as usize,
        loss_squared_sums.buf_ptr() as usize,
        extra_sums.buf_ptr() as usize,
    ];
    for (at, address) in addresses.iter().enumerate() {
        if addresses[..at].contains(address) && !(columns == 0 && at == 4) {
            return Err(PyValueError::new_err("the ring's arrays must be distinct"));
        }
    }
    Ok(Some(Slots {
        bucket_ids: writable(bucket_ids, "bucket_ids")?,
        events: writable(events, "events")?,
        loss_sums: writable(loss_sums, "loss_sums")?,
        loss_squared_sums: writable(loss_squared_sums, "loss_squared_sums")?,
        extra_sums: writable(extra_sums, "extra_sums")?,
        slots,
        columns,
    }))
}

/// Add a batch of at least one event to one ring; the events late for it
/// and the new head.
fn ring_add(
    ring: Slots,
    head: Option<i64>,
    bucket_ms: i64,
    timestamps_ms: &[i64],
    loss: &[f64],
    extra: &Extra<'_>,
) -> (u64, Option<i64>) {
    let Slots { slots, columns, .. } = ring;
    // SAFETY: the GIL is held (by `rings_add`'s caller) while these slices
    // live and no Python runs meanwhile, so nothing else touches the
    // arrays' memory; their buffers stay acquired (in `rings`) until
    // `rings_add` returns; a ring's arrays are distinct (`checked_ring`),
    // so its slices do not alias, and one ring's slices are gone before the
    // next ring's are made.
    let (bucket_ids, events, loss_sums, loss_squared_sums, extra_sums) = unsafe {
        (
            &mut *ring.bucket_ids.as_ptr(),
            &mut *ring.events.as_ptr(),
            &mut *ring.loss_sums.as_ptr(),
            &mut *ring.loss_squared_sums.as_ptr(),
            &mut *ring.extra_sums.as_ptr(),
        )
    };

    // The running head, and the events at or below it less the ring's size.
    let ring = slots as i64;
    let buckets: Vec<i64> = timestamps_ms
        .iter()
        .map(|t| t.div_euclid(bucket_ms))
        .collect();
    let mut running = head.unwrap_or(buckets[0]);
    let mut late = 0u64;
    for &bucket in &buckets {
        running = running.max(bucket);
        if bucket <= running.wrapping_sub(ring) {
            late += 1;
        }
    }

    // Sums by bucket of the events the ring still holds once the batch is
    // in, for the buckets the batch touches (few: a batch spans little time).
    let first_held = i128::from(running) - i128::from(ring) + 1;
    let mut touched = vec![u32::MAX; slots];
    let mut buckets_touched: Vec<usize> = Vec::new();
    let mut batch_events: Vec<i64> = Vec::new();
    let mut batch_loss: Vec<f64> = Vec::new();
    let mut batch_squared: Vec<f64> = Vec::new();
    let mut batch_extra: Vec<f64> = Vec::new();
    for (event, &bucket) in buckets.iter().enumerate() {
        let offset = i128::from(bucket) - first_held;
        if offset < 0 {
            continue;
        }
        let offset = offset as usize;
        if touched[offset] == u32::MAX {
            touched[offset] = buckets_touched.len() as u32;
            buckets_touched.push(offset);
            batch_events.push(0);
            batch_loss.push(0.0);
            batch_squared.push(0.0);
            batch_extra.resize(batch_extra.len() + columns, 0.0);
        }
        let at = touched[offset] as usize;
        let value = loss[event];
        batch_events[at] += 1;
        batch_loss[at] += value;
        batch_squared[at] += value * value;
        extra.add_to(event, &mut batch_extra[at * columns..(at + 1) * columns]);
    }

    for (at, &offset) in buckets_touched.iter().enumerate() {
        let bucket = (first_held + offset as i128) as i64;
        let slot = bucket.rem_euclid(ring) as usize;
        let reused = bucket_ids[slot] == bucket;
        bucket_ids[slot] = bucket;
        let kept = |value: f64| if reused { value } else { 0.0 };
        events[slot] = if reused { events[slot] } else { 0 } + batch_events[at];
        loss_sums[slot] = kept(loss_sums[slot]) + batch_loss[at];
        loss_squared_sums[slot] = kept(loss_squared_sums[slot]) + batch_squared[at];
        let held = &mut extra_sums[slot * columns..(slot + 1) * columns];
        for (sum, added) in held
            .iter_mut()
            .zip(&batch_extra[at * columns..(at + 1) * columns])
        {
            *sum = kept(*sum) + added;
        }
    }
    (late, Some(running))
}
