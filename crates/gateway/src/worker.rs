//! Worker threads. The gateway runs one single-threaded runtime per core, each with its own
//! upstream connections, as nginx runs one process per core; one acceptor hands each new
//! connection to the least-loaded worker (see `listener::WorkerSet`), and from then on a
//! request never hops threads.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as worker `index`.
pub fn set_current(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The index of the worker running on this thread (0 outside worker threads).
pub fn current() -> usize {
    WORKER.with(|w| w.get())
}
