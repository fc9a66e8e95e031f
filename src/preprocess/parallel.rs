//! Row-parallel preprocessing: the resize passes and the normalization split their rows into a few
//! blocks and run them on [`Workers`] — the engine's thread pool when there is one, so a frame's
//! preprocessing uses the cores its forward pass uses (and keeps their workers awake between
//! frames), or [`Serial`]ly. Every row is computed exactly as in one pass; only the order changes.

use std::sync::{Mutex, MutexGuard};

/// Runs a step's independent tasks: serially, or on several threads (the engine's pool).
pub trait Workers: Sync {
    /// Threads that take part (1 when serial).
    fn threads(&self) -> usize;
    /// Calls `f(t)` for every `t` in `0..tasks`, possibly on several threads at once; returns when
    /// all have returned.
    fn run_tasks(&self, tasks: usize, f: &(dyn Fn(usize) + Sync));
}

/// Every task on the calling thread, one after the other.
pub struct Serial;

impl Workers for Serial {
    fn threads(&self) -> usize {
        1
    }

    fn run_tasks(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..tasks).for_each(f)
    }
}

/// Most blocks one step is cut into (more threads than this share them).
pub(crate) const MAX_TASKS: usize = 16;

/// Fewest rows worth a task of their own (a row of a resize pass takes about a microsecond).
const MIN_ROWS: usize = 16;

/// How many blocks `rows` rows are cut into on `workers`.
pub(crate) fn task_count(workers: &dyn Workers, rows: usize) -> usize {
    workers.threads().min(MAX_TASKS).min(rows / MIN_ROWS).max(1)
}

/// First row of block `t` of `tasks` over `rows` rows (`first_row(tasks, ..) == rows`).
pub(crate) fn first_row(t: usize, tasks: usize, rows: usize) -> usize {
    t * rows / tasks
}

/// A buffer cut into one part per block, each behind its own lock so that the task of a block can
/// write its part from any thread. Each lock is taken once, by one task, so it never waits.
pub(crate) struct Parts<'a, T>(heapless::Vec<Mutex<&'a mut [T]>, MAX_TASKS>);

impl<'a, T: Send> Parts<'a, T> {
    /// Cuts `buf` (rows of `row_len` elements) into `tasks` parts of the rows
    /// `first_row(t, tasks, rows)..first_row(t + 1, tasks, rows)`.
    pub(crate) fn rows(mut buf: &'a mut [T], row_len: usize, tasks: usize, rows: usize) -> Self {
        assert!(tasks <= MAX_TASKS && buf.len() >= rows * row_len, "Parts::rows: {tasks} tasks, {} elements for {rows} rows of {row_len}", buf.len());
        let mut parts = heapless::Vec::new();
        for t in 0..tasks {
            let n = (first_row(t + 1, tasks, rows) - first_row(t, tasks, rows)) * row_len;
            let (head, tail) = std::mem::take(&mut buf).split_at_mut(n);
            buf = tail;
            // Cannot fail: at most MAX_TASKS parts (asserted above).
            let _ = parts.push(Mutex::new(head));
        }
        Parts(parts)
    }

    /// Cuts `buf` into `tasks` parts of `len` elements each.
    pub(crate) fn equal(buf: &'a mut [T], len: usize, tasks: usize) -> Self {
        Self::rows(buf, len, tasks, tasks)
    }

    /// The part of block `t`.
    pub(crate) fn get(&self, t: usize) -> MutexGuard<'_, &'a mut [T]> {
        // A poisoned lock means another task panicked; the pool re-raises that panic anyway.
        self.0[t].lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_rows_in_order() {
        for rows in [0usize, 1, 5, 16, 17, 100] {
            for tasks in 1..=MAX_TASKS {
                let mut buf: Vec<u32> = (0..rows as u32 * 3).collect();
                let parts = Parts::rows(&mut buf, 3, tasks, rows);
                let mut seen = Vec::new();
                for t in 0..tasks {
                    let p = parts.get(t);
                    assert_eq!(p.len(), (first_row(t + 1, tasks, rows) - first_row(t, tasks, rows)) * 3);
                    seen.extend_from_slice(&p);
                }
                assert_eq!(seen, (0..rows as u32 * 3).collect::<Vec<_>>(), "rows {rows}, tasks {tasks}");
            }
        }
    }

    #[test]
    fn task_count_is_bounded() {
        struct Many;
        impl Workers for Many {
            fn threads(&self) -> usize {
                64
            }
            fn run_tasks(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
                (0..tasks).for_each(f)
            }
        }
        assert_eq!(task_count(&Serial, 1000), 1);
        assert_eq!(task_count(&Many, 1000), MAX_TASKS);
        assert_eq!(task_count(&Many, 40), 2);
        assert_eq!(task_count(&Many, 3), 1);
        assert_eq!(task_count(&Many, 0), 1);
    }
}
