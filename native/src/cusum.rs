//! The change detector's recursion, one event at a time.
//!
//! `streamer.drift.LossCusum.update` standardises a batch of losses with
//! numpy and hands the increments here: `S = max(0, S + d)`, an alarm where
//! `S` exceeds the threshold, and `S` back at 0 for the next event. This is
//! the documented recursion itself, so the statistic is exactly what the
//! per-event definition gives.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

/// What one batch did: the statistic after it, the alarms raised and the
/// 0-based offsets in the batch of the first and last of them (0 and 0
/// without an alarm).
type Walked = (f64, u64, usize, usize);

/// Run the statistic from `statistic` over `increments` against `threshold`.
#[pyfunction]
pub fn cusum_update(
    py: Python<'_>,
    statistic: f64,
    increments: PyBuffer<f64>,
    threshold: f64,
) -> PyResult<Walked> {
    let mut values = vec![0f64; increments.item_count()];
    increments.copy_to_slice(py, &mut values)?;
    Ok(walk(statistic, &values, threshold))
}

fn walk(mut statistic: f64, increments: &[f64], threshold: f64) -> Walked {
    let (mut alarms, mut first, mut last) = (0u64, None, 0);
    for (offset, increment) in increments.iter().enumerate() {
        let moved = statistic + increment;
        statistic = if moved > 0.0 { moved } else { 0.0 };
        if statistic > threshold {
            alarms += 1;
            first.get_or_insert(offset);
            last = offset;
            statistic = 0.0;
        }
    }
    (statistic, alarms, first.unwrap_or(0), last)
}
