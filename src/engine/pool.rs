//! A small persistent thread pool: workers are spawned once per engine and wait on a condition
//! variable; [`Pool::run`] hands them a borrowed closure and returns when every task is done, so no
//! thread is spawned and nothing is allocated per call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A borrowed task function, type-erased to a raw pointer while a `run` call is in flight.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

// SAFETY: the pointee is `Sync` and `Pool::run` keeps it alive until every worker has finished
// with it, so sending the pointer to worker threads is sound.
unsafe impl Send for Job {}

struct State {
    generation: u64,
    job: Option<Job>,
    busy: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    start: Condvar,
    done: Condvar,
    next: AtomicUsize,
}

/// Persistent worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool that runs tasks on `threads` threads in total (the caller's thread included).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { generation: 0, job: None, busy: 0, shutdown: false }),
            start: Condvar::new(),
            done: Condvar::new(),
            next: AtomicUsize::new(0),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("vitedge-worker-{i}")).spawn(move || worker(&s)).expect("spawn worker thread")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Threads that execute tasks, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i < tasks`, spread over the pool; returns when all calls are done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || tasks <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        // SAFETY: only the lifetime is erased; the pointer is used by workers strictly before
        // this function returns (it waits for `busy == 0` below), while `f` is still borrowed.
        let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        self.shared.next.store(0, Ordering::SeqCst);
        {
            let mut st = self.shared.state.lock().expect("pool lock");
            st.job = Some(Job { f: f_static, tasks });
            st.generation += 1;
            st.busy = self.workers.len();
            self.shared.start.notify_all();
        }
        drain(&self.shared, f, tasks);
        let mut st = self.shared.state.lock().expect("pool lock");
        while st.busy > 0 {
            st = self.shared.done.wait(st).expect("pool lock");
        }
        st.job = None;
    }
}

fn drain(shared: &Shared, f: &(dyn Fn(usize) + Sync), tasks: usize) {
    loop {
        let i = shared.next.fetch_add(1, Ordering::SeqCst);
        if i >= tasks {
            break;
        }
        f(i);
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut st = shared.state.lock().expect("pool lock");
            while st.generation == seen && !st.shutdown {
                st = shared.start.wait(st).expect("pool lock");
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.job
        };
        if let Some(job) = job {
            // SAFETY: `run` keeps the closure alive until this worker decrements `busy`.
            let f = unsafe { &*job.f };
            drain(shared, f, job.tasks);
        }
        let mut st = shared.state.lock().expect("pool lock");
        st.busy -= 1;
        if st.busy == 0 {
            shared.done.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.shutdown = true;
        }
        self.shared.start.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_exactly_once_many_times() {
        for threads in [1, 2, 4] {
            let pool = Pool::new(threads);
            assert_eq!(pool.threads(), threads);
            for round in 0..200 {
                let n = 35 + round % 3;
                let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::SeqCst);
                });
                assert!(hits.iter().take(n).all(|h| h.load(Ordering::SeqCst) == 1));
                assert!(hits.iter().skip(n).all(|h| h.load(Ordering::SeqCst) == 0));
            }
        }
    }
}
